"""The stages of the compress pipeline, one module each: its config dataclasses and its ``StageSpec``. They are
listed, in run order, in ``hfcompress.pipeline.registry``."""
