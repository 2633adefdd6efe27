"""Sharing compressed variants: model cards built from a run's own report (``card.py``), and names, checks,
export and push to the Hub (``share.py``)."""

from .card import CompressionInfo, build_model_card
from .share import (
    check_model_folder,
    check_repo_id,
    check_sharing,
    check_token,
    export_variant,
    push_variant,
    share_variant,
    variant_name,
)

__all__ = [
    "CompressionInfo",
    "build_model_card",
    "check_model_folder",
    "check_repo_id",
    "check_sharing",
    "check_token",
    "export_variant",
    "push_variant",
    "share_variant",
    "variant_name",
]
