"""Distil a fine-tuned BERT-family teacher into a smaller student, evaluate both, save, report.

    accelerate launch recipes/distill_bert.py
    accelerate launch recipes/distill_bert.py --config recipes/configs/minilm/rotten_tomatoes/distill_full.yaml
    accelerate launch --multi_gpu --num_processes 2 recipes/distill_bert.py --max_train_samples 512   # 2 CPU procs

Steps: load the data; load the teacher and fine-tune it on the task if it has no head for these labels
(saved in <output_dir>/teacher and reused by later runs); build the student from the teacher's layers (or
load a pretrained one); distil; evaluate teacher and student on the test split; save the student to
<output_dir>/student; write <output_dir>/report.json and report.md. Bad input stops the run before anything
is written.
"""

import logging
from pathlib import Path

from transformers import set_seed

from hfcompress import DistillationTrainer, create_student_from_teacher
from hfcompress.configs import parse_int_list
from hfcompress.data import (
    DistillationDataCollator,
    load_text_classification,
    same_vocabulary,
    tokenize_dataset,
)
from hfcompress.distillation import select_layers
from hfcompress.distillation.trainer import check_shared_vocabulary, resolve_layer_maps
from hfcompress.evaluation import markdown_table, write_report
from hfcompress.finetune import load_classifier, load_tokenizer
from hfcompress.hub import CompressionInfo
from hfcompress.metrics import classification_metrics
from hfcompress.pipeline import (
    finetuned_teacher,
    limit_samples,
    measure_model,
    report_columns,
    run_recipe,
    share_variant,
    start_recipe,
)

logger = logging.getLogger("distill_bert")
DISTILL_SETTINGS = (
    "temperature",
    "alpha",
    "hidden_mse_weight",
    "hidden_cosine_weight",
    "attention_weight",
    "num_train_epochs",
    "learning_rate",
)
DEFAULT_CONFIG = Path(__file__).parent / "configs/minilm/rotten_tomatoes/distill_default.yaml"


def main(argv=None) -> dict | None:
    argv, (recipe, data_args, args) = start_recipe("distill", DEFAULT_CONFIG, argv)
    out = Path(args.output_dir)
    set_seed(args.seed)

    # 1. Data and models; every check that can fail on bad input happens here, before anything is written.
    raw, label_names = load_text_classification(
        data_args.dataset_name, data_args.text_column, data_args.label_column
    )
    raw = limit_samples(raw, data_args.max_train_samples, data_args.max_eval_samples, args.seed)
    attn = {"attn_implementation": "eager"} if args.attention_weight > 0 else {}
    teacher_tok = load_tokenizer(recipe.teacher_model_name_or_path)
    teacher, head_ready = load_classifier(recipe.teacher_model_name_or_path, label_names, **attn)
    student = None
    student_tok = teacher_tok
    if recipe.student_model_name_or_path:
        student_tok = load_tokenizer(recipe.student_model_name_or_path)
        student, _ = load_classifier(recipe.student_model_name_or_path, label_names, **attn)
    separate = recipe.tokenizer_mode == "separate" or (
        recipe.tokenizer_mode == "auto" and not same_vocabulary(teacher_tok, student_tok)
    )
    if not separate and student is not None:
        check_shared_vocabulary(student, teacher, student_tok, teacher_tok)
    student_depth = (
        student.config.num_hidden_layers
        if student is not None
        else len(select_layers(recipe.student_layers, teacher.config.num_hidden_layers))
    )
    resolve_layer_maps(args, student_depth, teacher.config.num_hidden_layers)
    batch_sizes = parse_int_list(recipe.latency_batch_sizes, "latency_batch_sizes")
    compute_metrics = classification_metrics(data_args.metric_names, len(label_names))

    # 2. Teacher: fine-tuned on the task first unless it already is (transfer learning).
    teacher_data = tokenize_dataset(raw, teacher_tok, data_args.max_seq_length)
    teacher = finetuned_teacher(
        recipe,
        data_args,
        args,
        teacher,
        head_ready,
        label_names,
        teacher_tok,
        teacher_data,
        out,
        compute_metrics,
    )

    # 3. Student: the teacher's layers (DistilBERT-style), or the pretrained student loaded above.
    if student is None:
        student = create_student_from_teacher(teacher, recipe.student_layers)
    student_data = tokenize_dataset(
        raw, student_tok, data_args.max_seq_length, teacher_tok if separate else None
    )

    # 4. Distil.
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=student_data["train"],
        eval_dataset=student_data["validation"],
        processing_class=student_tok,
        teacher_processing_class=teacher_tok if separate else None,
        compute_metrics=compute_metrics,
    )
    train_result = trainer.train()
    trainer.save_model(str(out / "student"))
    if not trainer.is_world_process_zero():
        return None

    # 5. Evaluate both on the held-out test split and report.
    texts = raw["test"]["text"][:64]
    measure = dict(
        texts=texts, batch_sizes=batch_sizes, max_length=data_args.max_seq_length, runs=recipe.latency_runs
    )
    teacher_dir = out / "teacher" if (out / "teacher").exists() else None
    rows = [
        {
            "model": "teacher",
            **measure_model(
                trainer.teacher.float(),
                teacher_dir,
                teacher_tok,
                teacher_data["test"],
                DistillationDataCollator(teacher_tok),
                compute_metrics,
                **measure,
            ),
        },
        {
            "model": "student",
            **measure_model(
                student,
                out / "student",
                student_tok,
                student_data["test"],
                DistillationDataCollator(student_tok),
                compute_metrics,
                **measure,
            ),
        },
    ]
    report = {
        "recipe": "distill_bert",
        "command": " ".join(["recipes/distill_bert.py", *argv]),
        "teacher": recipe.teacher_model_name_or_path,
        "student_layers": recipe.student_layers,
        "dataset": data_args.dataset_name,
        "train_examples": len(raw["train"]),
        "test_examples": len(raw["test"]),
        "train_samples_per_second": train_result.metrics.get("train_samples_per_second"),
        "results": rows,
    }
    markdown = (
        f"# distill_bert report\n\n{len(raw['test'])} test examples of {data_args.dataset_name}.\n\n"
        + markdown_table(rows, report_columns(batch_sizes))
    )
    write_report(out, "report", report, markdown)

    # 6. Share: export and/or push with a model card made from the figures above.
    info = CompressionInfo(
        kind="distilled",
        base_model=recipe.teacher_model_name_or_path,
        dataset=data_args.dataset_name,
        method=f"knowledge distillation into {student.config.num_hidden_layers} layers",
        settings={k: getattr(args, k) for k in DISTILL_SETTINGS} | {"student_layers": recipe.student_layers},
        teacher=f"{recipe.teacher_model_name_or_path} (fine-tuned on {data_args.dataset_name})",
        metrics=rows[1],
        reference=rows[0],
        command=report["command"],
    )
    report["hub"] = share_variant(
        recipe, out / "student", info, "distilled", f"{student.config.num_hidden_layers}L"
    )
    if report["hub"]:
        write_report(out, "report", report, markdown)
    print("\n" + markdown + f"\nSaved the student to {out / 'student'} and the report to {out / 'report.md'}")
    return report


if __name__ == "__main__":
    run_recipe(main, "distill_bert")
