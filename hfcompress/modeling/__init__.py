"""What every method needs to know about a model: where its layers are and what their parts are
(``layers.py``), how to load it and its tokenizer (``loading.py``), and the decoder families' quirks
(``families.py``). Two layer layouts are known: BERT-style (``attention.self.query`` ... ``intermediate.dense``,
``output.dense``) and Llama-style (``self_attn.q_proj`` ... ``mlp.gate_proj/up_proj/down_proj``).
"""

from .families import FAMILIES, DecoderFamily, decoder_family, logit_transform, model_type, rope_settings
from .layers import (
    attention_inputs,
    attention_output,
    count_parameters,
    ffn_inputs,
    ffn_output,
    find_layer_list,
    head_layout,
    hidden_norms,
    keep_layers,
    layer_style,
    matching_linears,
    neuron_rows,
    select_layers,
    stop_token_ids,
)
from .loading import (
    TOKENIZER_FILES,
    TORCH_DTYPES,
    check_labels_fit,
    check_text_only,
    has_classification_head,
    is_causal_lm,
    load_causal_lm,
    load_classifier,
    load_tokenizer,
    saved_tokenizer,
)

__all__ = [
    "FAMILIES",
    "TOKENIZER_FILES",
    "TORCH_DTYPES",
    "DecoderFamily",
    "attention_inputs",
    "attention_output",
    "check_labels_fit",
    "check_text_only",
    "count_parameters",
    "decoder_family",
    "ffn_inputs",
    "ffn_output",
    "find_layer_list",
    "has_classification_head",
    "head_layout",
    "hidden_norms",
    "is_causal_lm",
    "keep_layers",
    "layer_style",
    "load_causal_lm",
    "load_classifier",
    "load_tokenizer",
    "logit_transform",
    "matching_linears",
    "model_type",
    "neuron_rows",
    "rope_settings",
    "saved_tokenizer",
    "select_layers",
    "stop_token_ids",
]
