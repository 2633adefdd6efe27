"""Distil a fine-tuned BERT-family teacher into a smaller student, evaluate both, save, report, share.

    accelerate launch recipes/distill_bert.py
    accelerate launch recipes/distill_bert.py --config recipes/configs/minilm/rotten_tomatoes/distill_full.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/distill_bert.py --max_train_samples 512   # 2 CPU procs
    python recipes/distill_bert.py --help

Steps: load the data (and unlabelled_data, text the student distils on with soft targets only); load the teacher and fine-tune it on the task if it has no head for these labels
(saved in <output_dir>/teacher and reused by later runs); build the student from the teacher's layers (or
load a pretrained one); distil; evaluate teacher and student on the validation and test splits, latency with
the two models taking turns; save the student to <output_dir>/student; write <output_dir>/report.json and
report.md; export/push the student if asked (share_*). Bad input stops the run before anything is written.
"""

from pathlib import Path

from datasets import DatasetDict
from transformers import set_seed

from hfcompress import DistillationConfig, DistillationTrainer, HfCompressError, create_student_from_teacher
from hfcompress.configs import DataArguments, DistillRecipeArguments, parse_int_list
from hfcompress.data import (
    limit_samples,
    load_text_classification,
    same_vocabulary,
    tokenize_dataset,
)
from hfcompress.data.unlabelled import add_unlabelled, load_unlabelled_texts
from hfcompress.distillation import check_shared_vocabulary, resolve_layer_maps
from hfcompress.evaluation import classification_metrics, compare_models, markdown_table, report_columns
from hfcompress.finetuning import finetuned_teacher
from hfcompress.hub import CompressionInfo
from hfcompress.modeling import load_classifier, load_tokenizer, select_layers
from hfcompress.recipe import finish_recipe, report_header, run_recipe, start_recipe

CONFIG_TYPES = (DistillRecipeArguments, DataArguments, DistillationConfig)
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/distill_default.yaml"
SETTINGS = ("temperature", "alpha", "hidden_mse_weight", "hidden_cosine_weight", "attention_weight",
            "num_train_epochs", "learning_rate")  # fmt: skip


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, args) = start_recipe(CONFIG_TYPES, DEFAULT_CONFIG, argv)
    if args.shard_teacher:  # its evaluation runs the teacher in the main process alone
        raise HfCompressError("shard_teacher is supported by recipes/distill_llm.py; set it to false here")
    out = Path(args.output_dir)
    set_seed(args.seed)

    # 1. Data and models; every check that can fail on bad input happens here, before anything is written.
    raw, labels = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    unlabelled = []  # extra text for the student's distillation only (soft targets); the teacher never sees it
    if recipe.unlabelled_data:
        unlabelled = load_unlabelled_texts(recipe.unlabelled_data, recipe.unlabelled_text_column)
    attn = {"attn_implementation": "eager"} if args.attention_weight > 0 else {}
    teacher_tok = student_tok = load_tokenizer(recipe.teacher_model_name_or_path)
    teacher, head_ready = load_classifier(recipe.teacher_model_name_or_path, labels, dataset=raw, **attn)
    student = None
    if recipe.student_model_name_or_path:
        student_tok = load_tokenizer(recipe.student_model_name_or_path)
        student, _ = load_classifier(recipe.student_model_name_or_path, labels, dataset=raw, **attn)
    separate = recipe.tokenizer_mode == "separate" or (
        recipe.tokenizer_mode == "auto" and not same_vocabulary(teacher_tok, student_tok)
    )
    if not separate and student is not None:
        check_shared_vocabulary(student, teacher, student_tok, teacher_tok)
    depth = (
        student.config.num_hidden_layers
        if student is not None
        else len(select_layers(recipe.student_layers, teacher.config.num_hidden_layers))
    )
    resolve_layer_maps(args, depth, teacher.config.num_hidden_layers)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    metrics = classification_metrics(data_args.metric_names, len(labels))

    # 2. Teacher: fine-tuned on the task first unless it already is (transfer learning).
    teacher_data = tokenize_dataset(raw, teacher_tok, data_args.max_seq_length)
    teacher, teacher_dir = finetuned_teacher(
        recipe, data_args, args, teacher, head_ready, teacher_tok, teacher_data, out, metrics
    )

    # 3. Student: the teacher's layers (DistilBERT-style), or the pretrained student loaded above; distil.
    student = student or create_student_from_teacher(teacher, recipe.student_layers)
    student_raw = (
        DatasetDict({**raw, "train": add_unlabelled(raw["train"], unlabelled)}) if unlabelled else raw
    )
    student_data = tokenize_dataset(
        student_raw, student_tok, data_args.max_seq_length, teacher_tok if separate else None
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=student_data["train"],
        eval_dataset=student_data["validation"],
        processing_class=student_tok,
        teacher_processing_class=teacher_tok if separate else None,
        compute_metrics=metrics,
    )
    train_result = trainer.train()
    trainer.save_model(str(out / "student"))
    if not trainer.is_world_process_zero():
        return None

    # 4. Evaluate both on validation and test; latency with the models taking turns.
    entries = [("teacher", trainer.teacher.float(), teacher_dir, teacher_data, teacher_tok),
               ("student", student, out / "student", student_data, student_tok)]  # fmt: skip
    rows = compare_models(entries, metrics, raw["test"]["text"][:64], batch_sizes, data_args.max_seq_length,
                          recipe.latency_runs)  # fmt: skip
    report = {
        **report_header("distill_bert", argv, data_args, raw),
        "teacher": recipe.teacher_model_name_or_path,
        "student_layers": recipe.student_layers,
        "tokenization": "separate" if separate else "shared",
        "unlabelled_rows": len(unlabelled),
        "train_samples_per_second": train_result.metrics.get("train_samples_per_second"),
        "results": rows,
    }
    markdown = (
        f"# distill_bert report\n\n{len(raw['test'])} test examples of {data_args.dataset_name}; latency on "
        f"{rows[0]['torch_threads']} CPU threads, models interleaved.\n\n"
        + markdown_table(rows, report_columns(batch_sizes))
    )

    # 5. Report and share: export and/or push with a model card made from the figures above.
    layers = student.config.num_hidden_layers
    info = CompressionInfo(
        kind="distilled",
        base_model=recipe.teacher_model_name_or_path,
        dataset=data_args.dataset_name,
        method=f"knowledge distillation into {layers} layers",
        settings={k: getattr(args, k) for k in SETTINGS} | {"student_layers": recipe.student_layers},
        teacher=f"{recipe.teacher_model_name_or_path} (fine-tuned on {data_args.dataset_name})",
        metrics=rows[1],
        reference=rows[0],
        command=report["command"],
    )
    variants = {"student": (out / "student", info, ["distilled", f"{layers}L"])}
    return finish_recipe(out, recipe, report, markdown, variants, f"Saved the student to {out / 'student'}")


if __name__ == "__main__":
    run_recipe(main, "distill_bert")
