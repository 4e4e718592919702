"""Every string of the UI in English and Simplified Chinese, and how a request picks its language.

Gradio 6.17.3 translates in the browser (from `navigator.language`) only some props: a component's
`label`, `info`, `placeholder`, a Button's and a Markdown's `value`, Tab and Accordion labels, given as
`translated(key)`. It does not translate choice labels, Dataframe headers, gr.Info/Warning/Error
messages, HTML or plot text: those the server renders with `t(key, lang_of(request))`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr

LANGUAGES = ("en", "zh-CN")

# Keys are "<area>.<name>". Areas avoid Gradio's own namespaces (common, errors, label, login, plot,
# dropdown, ...), which share the browser-side dictionary with these.
EN: dict[str, str] = {
    # The app and its tabs
    "app.tab.generate": "Generate",
    "app.tab.attention": "Attention",
    "app.tab.compare": "Compare",
    "app.tab.benchmark": "Benchmark",
    "app.tab.history": "History",
    "app.history_disabled": "History is disabled: {reason}",
    "app.login": "This GPT-2 Playground asks for a login.",
    # Generate tab
    "generate.prompt": "Prompt",
    "generate.model": "Model",
    "generate.model_info": "the models/ folder, or type a hub id (e.g. distilgpt2)",
    "generate.backend": "Backend",
    "generate.variant": "ONNX variant",
    "generate.variant_info": "fp16 needs a GPU; int8 runs on the CPU",
    "generate.generate": "Generate",
    "generate.stop": "Stop",
    "generate.max_new_tokens": "Max new tokens",
    "generate.do_sample": "Sample (off = greedy)",
    "generate.temperature": "Temperature",
    "generate.top_k": "Top-k (0 = off)",
    "generate.top_p": "Top-p (1 = off)",
    "generate.seed": "Seed (empty = random)",
    "generate.advanced": "Advanced",
    "generate.typical_p": "Typical-p (1 = off)",
    "generate.repetition_penalty": "Repetition penalty (1 = off)",
    "generate.no_repeat_ngram_size": "No-repeat n-gram size (0 = off)",
    "generate.stop_sequences": "Stop sequences (one per line; \\n means newline)",
    "generate.top_alternatives": "Alternatives recorded per token",
    "generate.output": "Output",
    "generate.colour_by": "Colour tokens by",
    "generate.colour_prob": "Probability",
    "generate.colour_rank": "Rank (GLTR)",
    "generate.branch": "Branch from an alternative",
    "generate.branch_help": "Keep the run up to a token, swap that token for one of its alternatives, and continue with the "
                            "same settings, seed and backend. The branch is saved to the history with where it came from.",
    "generate.branch_token": "Token of the last run",
    "generate.branch_alternative": "Alternative",
    "generate.branch_button": "Continue from this alternative",
    "generate.records": "Per-token records (JSON)",
    "generate.branch_pick": "Generate something, then pick a token and one of its alternatives.",
    "generate.nothing_running": "Nothing is running.",
    # Attention tab
    "attention.intro": "Attention of the last run on the Generate tab, computed by the backend that generated it, once per run "
                       "(at most the last {max_tokens} tokens). Row = the query token; columns = the tokens it attended to.",
    "attention.compute": "Compute attention for the last run",
    "attention.layer": "Layer",
    "attention.head": "Head",
    "attention.query": "Highlight a token's row",
    "attention.mean_heads": "mean over heads",
    "attention.head_n": "head {head}",
    "attention.no_query": "(none)",
    "attention.all_heads": "All heads of this layer",
    "attention.png": "Heatmap as PNG",
    "attention.svg": "Heatmap as SVG",
    "attention.npz": "Attention tensor (.npz)",
    "attention.download": "Download",
    "attention.generate_first": "Generate something on the Generate tab first.",
    "attention.computed": "Computed by **{backend}** over {tokens} tokens ({layers} layers × {heads} heads).",
    "attention.compute_first": "Compute attention first.",
    # Compare tab
    "compare.intro": "Runs the prompt and settings of the Generate tab on two sides, each a model, a backend and (on ONNX "
                     "Runtime) a variant: base vs fine-tuned, PyTorch vs ONNX, one model vs another. Both sides use the same "
                     "seed (an empty seed is drawn once and used for both). Both runs are saved to the history.",
    "compare.side_a": "**Side A**",
    "compare.side_b": "**Side B**",
    "compare.swap": "⇄ Swap sides",
    "compare.run": "Compare A and B",
    "compare.running": "Running side {side}: {label}…",
    "compare.seed": "Same seed on both sides: **{seed}**.",
    "compare.identical": "**Identical output** over {tokens} tokens.",
    "compare.end": "(end)",
    "compare.divergence": "**First divergence at generated token {index}**: A chose `{token_a}`, B chose `{token_b}` "
                          "(outlined in red).",
    "compare.max_diff": "Largest difference in the chosen token's probability before that point: **{diff:.4f}**.",
    "compare.speed": "Decode speed: A **{speed_a:.1f}** vs B **{speed_b:.1f}** tokens/s (B at **{speedup:.2f}×** A; one live "
                     "run each, the Benchmark is the controlled measurement).",
    "compare.different_tokenizers": "**Different tokenizers** (A: {vocab_a} tokens, B: {vocab_b}): the same id means a "
                                    "different token on each side, so the runs cannot be compared token by token: no "
                                    "divergence and no probability plot. Read the two outputs side by side.",
    "compare.plot_title": "Probability each side gave A's chosen token",
    "compare.plot_x": "position",
    "compare.plot_y": "p(A's token)",
    "compare.diverged": "diverged",
    # Fine-tune tab
    "app.tab.finetune": "Fine-tune",
    "finetune.intro": "Fine-tune a GPT-2 on your own text: full fine-tuning (every weight) or LoRA (small adapters, merged into the weights at the end). A held-out part of the text measures validation perplexity before and after. The result is a new model in the models folder, offered at once in every model list. One job at a time; generation keeps working meanwhile, more slowly.",
    "finetune.base": "Base model",
    "finetune.name": "New model's name",
    "finetune.name_info": "a folder name in models/: letters, digits, - _ .",
    "finetune.paste": "Training text",
    "finetune.paste_info": "paste text: paragraphs separated by blank lines (or one example per line) are the examples",
    "finetune.upload": "…or upload a file (.txt, .jsonl, .csv; at most 20 MB)",
    "finetune.upload_note": "An uploaded file takes the place of the pasted text. It is read and deleted at once, never served back; at most 20 MB. A .jsonl file needs a `text` field on each line; a .csv file, a column to train on.",
    "finetune.column": "CSV column",
    "finetune.column_info": "the column that holds the text",
    "finetune.method_label": "Method",
    "finetune.method_full": "Full fine-tuning",
    "finetune.method_lora": "LoRA",
    "finetune.learning_rate": "Learning rate",
    "finetune.learning_rate_info": "empty = 5e-5 for full, 2e-4 for LoRA",
    "finetune.seed": "Seed",
    "finetune.epochs": "Epochs",
    "finetune.max_steps": "Max steps",
    "finetune.max_steps_info": "0 = train for the epochs",
    "finetune.batch_size": "Batch size",
    "finetune.accumulation": "Gradient accumulation",
    "finetune.block_label": "Block size (tokens)",
    "finetune.advanced": "Optimizer",
    "finetune.warmup": "Warm-up steps",
    "finetune.weight_decay": "Weight decay",
    "finetune.clipping": "Gradient clipping",
    "finetune.clipping_info": "max gradient norm; 0 = off",
    "finetune.lora": "LoRA settings",
    "finetune.lora_rank": "Rank",
    "finetune.lora_alpha": "Alpha",
    "finetune.lora_dropout": "Dropout",
    "finetune.lora_targets": "Target modules",
    "finetune.lora_targets_info": "GPT-2: c_attn (attention q, k, v), c_proj (output projections), c_fc (MLP)",
    "finetune.check": "Check data",
    "finetune.start": "Start fine-tuning",
    "finetune.cancel": "Cancel",
    "finetune.compare": "Compare with the base model",
    "finetune.preview_source": "Data: <b>{source}</b>, read as {encoding}.",
    "finetune.preview_stats": "{texts} texts, {tokens} tokens; {short} shorter than a block; [UNK] share {unk}.",
    "finetune.preview_blocks": "Blocks of {block} tokens: {train} to train on, {val} held out for validation.",
    "finetune.preview_run": "The run: {steps} steps on {device} ({precision}), learning rate {rate}.",
    "finetune.preview_examples": "First examples",
    "finetune.col_index": "#",
    "finetune.col_tokens": "tokens",
    "finetune.col_chars": "characters",
    "finetune.col_text": "text",
    "finetune.no_job": "No fine-tuning job yet.",
    "finetune.job_head": "Job #{id}: {name} (from {base}) · {status}",
    "finetune.status.running": "running",
    "finetune.status.complete": "complete",
    "finetune.status.cancelled": "cancelled",
    "finetune.status.error": "failed",
    "finetune.phase.queued": "queued",
    "finetune.phase.loading": "loading the model",
    "finetune.phase.evaluating": "measuring validation loss",
    "finetune.phase.training": "training",
    "finetune.phase.saving": "saving",
    "finetune.phase.complete": "done",
    "finetune.step": "step {step} / {total}",
    "finetune.tokens_per_s": "{tps} tokens/s",
    "finetune.eta": "{eta} left",
    "finetune.elapsed": "{elapsed} elapsed",
    "finetune.train_loss": "training loss {loss}",
    "finetune.val_loss": "validation loss {loss}",
    "finetune.done": "New model: <b>{name}</b> (fine-tuned from {base}), now in every model list.",
    "finetune.perplexity": "Validation perplexity: <b>{before} → {after}</b> ({change}).",
    "finetune.seconds": "{steps} steps in {seconds} s.",
    "finetune.cancelled": "The job was cancelled; nothing was saved.",
    "finetune.failed": "The job failed; nothing was saved. Reason:",
    "finetune.started": "Fine-tuning {name}: {steps} steps.",
    "finetune.cancelling": "Cancelling: the job stops within a step.",
    "finetune.nothing_running": "No fine-tuning job is running.",
    "finetune.plot_title": "Loss",
    "finetune.plot_x": "step",
    "finetune.plot_y": "loss",
    "finetune.plot_train": "training",
    "finetune.plot_val": "validation",
    # Benchmark tab
    "bench.intro": "Times the playground's own decoding loop on **{model}**: greedy, a fixed number of new tokens, warm-up then "
                   "repeats, one thread setting for every cell. Quality is measured against PyTorch fp32 on a fixed text. "
                   "Results are also stored in the history database (`bench` table).",
    "bench.cells": "Cells (what this machine can run)",
    "bench.prompt_tokens": "Prompt tokens",
    "bench.new_tokens": "New tokens",
    "bench.repeats": "Repeats",
    "bench.run": "Run benchmark",
    "bench.files": "Download (CSV, JSON, Markdown, PNG)",
    "bench.choose_cell": "Choose at least one cell.",
    "bench.must_fit": "Prompt tokens (≥ 1) + new tokens (≥ 2) must fit the model's context of {context}.",
    "bench.machine": "{cpu} ({cores} cores)",
    "bench.machine_gpu": "{cpu} ({cores} cores, {gpu})",
    "bench.note": "{cells} cells on {machine}, {threads} threads, {repeats} repeats.",
    "bench.random_weights": "Random weights: quality columns are not meaningful.",
    "bench.speed_title": "Decode speed (speed-up vs PyTorch fp32 on the bars)",
    "bench.ttft_title": "Time to first token",
    "bench.tokens_per_s": "tokens/s",
    "bench.col.backend": "backend",
    "bench.col.variant": "variant",
    "bench.col.provider": "provider",
    "bench.col.prompt_tokens": "prompt_tokens",
    "bench.col.new_tokens": "new_tokens",
    "bench.col.ttft_ms": "ttft_ms",
    "bench.col.decode_tokens_per_s": "decode_tokens_per_s",
    "bench.col.speedup_vs_torch_fp32": "speedup_vs_torch_fp32",
    "bench.col.latency_p50_ms": "latency_p50_ms",
    "bench.col.latency_p90_ms": "latency_p90_ms",
    "bench.col.peak_rss_mb": "peak_rss_mb",
    "bench.col.size_mb": "size_mb",
    "bench.col.top1_agreement": "top1_agreement",
    # History tab
    "history.disabled": "**History is disabled.** {reason}\n\nGeneration works as usual; runs are not saved.",
    "history.search": "Search prompts and outputs",
    "history.search_placeholder": "words to find (taken literally)",
    "history.model": "Model",
    "history.backend": "Backend",
    "history.all": "(all)",
    "history.refresh": "Refresh",
    "history.col.id": "id",
    "history.col.time": "time (UTC)",
    "history.col.model": "model",
    "history.col.backend": "backend",
    "history.col.prompt": "prompt",
    "history.col.tokens_per_s": "tokens/s",
    "history.col.status": "status",
    "history.use": "Use these settings",
    "history.attention": "Show attention",
    "history.delete": "Delete run…",
    "history.confirm_delete": "Yes, delete it",
    "history.cancel": "Cancel",
    "history.select_hint": "Select a run in the table to open it.",
    "history.output": "Output",
    "history.settings": "Settings",
    "history.metrics": "Metrics",
    "history.export": "Export",
    "history.format": "Format",
    "history.scope": "Runs",
    "history.scope_shown": "Runs in the table",
    "history.scope_all": "Everything",
    "history.export_button": "Export",
    "history.download": "Download",
    "history.gone": "Run {run_id} no longer exists.",
    "history.run_title": "### Run #{run_id} · {time} UTC · {status}",
    "history.run_error": "Error: `{error}`",
    "history.select_first": "Select a run first.",
    "history.already_deleted": "That run was already deleted.",
    "history.deleted": "Deleted run #{run_id}.",
    "history.exported": "Exported {count} runs.",
    "history.status.complete": "complete",
    "history.status.stopped": "stopped",
    "history.status.error": "error",
    # Domain errors (playground/config.py), by the key they carry; English matches their own message.
    "settings.unknown": "Unknown setting(s): {unknown}. Known settings: {known}.",
    "settings.range": "{name}={value!r} is out of range; allowed: {interval}.",
    "settings.too_many_stops": "At most {limit} stop sequences are allowed; got {count}.",
    "settings.stop_length": "Each stop sequence must have 1 to {limit} characters; got {length}.",
    "settings.context": "max_new_tokens={value} does not fit this model's context of {context} tokens; use at most {most}.",
    "settings.not_int": "{name} must be a whole number; got {value!r}.",
    "settings.not_number": "{name} must be a number; got {value!r}.",
    "settings.not_finite": "{name} must be a finite number; got {value!r}.",
    "settings.not_bool": "do_sample must be true or false; got {value!r}.",
    "settings.not_list": "stop_sequences must be a list of strings; got {value!r}.",
    "settings.prompt_type": "The prompt must be text; got {type}.",
    "settings.prompt_too_long": "The prompt has {length:,} characters; the limit is {limit:,}. "
                                "Only the last part fits in the model's context anyway: paste less text.",
    # Fine-tuning errors (playground/training/*.py), by the key they carry
    "data.bad_bom": "{name} starts with a {encoding} byte-order mark but is not valid {encoding}. Save it again as UTF-8.",
    "data.binary": "{name} looks binary (it contains NUL bytes), not text. Use a .txt, .jsonl or .csv text file; UTF-16 text needs its byte-order mark, or save it as UTF-8.",
    "data.damaged_utf8": "{name} is UTF-8 except for {bad} damaged byte(s) (the first at byte {offset}): it was cut or mixes encodings. Fix or re-save it as UTF-8.",
    "data.unknown_encoding": "{name} is not text in UTF-8, UTF-16 (with a byte-order mark), GB18030/GBK, Big5 or Windows-1252: most of it cannot be decoded. Save it as UTF-8.",
    "data.empty": "{name} has no text to train on (it is empty or only whitespace).",
    "data.not_text": "The training text must be text.",
    "data.too_large": "The data is {size_mb} MB; the limit is {limit_mb} MB. Use less text or a smaller file.",
    "data.format": "{name}: training data must be a text file ({formats}).",
    "data.unreadable": "{name} cannot be read.",
    "data.bad_csv": "{name} is not a valid CSV file.",
    "data.no_header": "{name} has no header row: the first row must name the columns.",
    "data.choose_column": "{name} has several columns ({columns}): choose the one that holds the text.",
    "data.no_column": "{name} has no column {column!r}; its columns are: {columns}.",
    "data.bad_jsonl": "{name}, line {line}: not valid JSON. Each line must be one JSON object.",
    "data.no_field": "{name}, line {line}: no {field!r} text field. Each line must be a JSON object with that field.",
    "data.too_short": "{name} has {tokens} tokens; fine-tuning with blocks of {block} tokens needs at least {needed} (one block to train on, one to validate on). Add text, or set the block size to at most {most}.",
    "data.short_texts": "{short} of {texts} texts are shorter than a block of {block} tokens: they are packed together, none is dropped.",
    "data.unk": "{fraction:.1%} of the tokens are [UNK]: characters this model's vocabulary does not have. The model cannot learn or write them; check the file's encoding, or use a model whose vocabulary covers this text.",
    "finetune.unknown": "Unknown fine-tuning setting(s): {unknown}. Known settings: {known}.",
    "finetune.method": "method={value!r} is not a fine-tuning method; use one of: {allowed}.",
    "finetune.device": "device={value!r} is not allowed; use one of: {allowed}.",
    "finetune.range": "{name}={value!r} is out of range; allowed: {interval}.",
    "finetune.targets": "lora_target_modules={value} must be one or more module names of this model such as c_attn, c_proj, c_fc.",
    "finetune.block_size": "block_size={value} does not fit this model's context of {context} tokens; use at most {context}.",
    "finetune.not_int": "{name} must be a whole number; got {value!r}.",
    "finetune.not_number": "{name} must be a number; got {value!r}.",
    "finetune.not_finite": "{name} must be a finite number; got {value!r}.",
    "finetune.name_missing": "Give the new model a name (letters, digits, - _ .), e.g. my-gpt2.",
    "finetune.name_path": "{name!r} is a path; the new model's name must be a plain folder name such as my-gpt2.",
    "finetune.name_hidden": "{name!r} would be a hidden folder; start the name with a letter or digit.",
    "finetune.name_chars": "{name!r} is not a usable model name: use at most {most} letters, digits, '-', '_' or '.'.",
    "finetune.name_reserved": "{name!r}: names beginning with random- are kept for randomly initialised models; choose another.",
    "finetune.name_taken": "A model named {name!r} already exists; choose another name or delete that folder first.",
    "finetune.not_gpt2": "'{model}' is a {model_type} model; fine-tuning here works on GPT-2 family models only (model_type gpt2), e.g. gpt2, distilgpt2, demo or demo-zh.",
    "finetune.no_cuda": "device=cuda was asked for, but no CUDA GPU is available here; use cpu or auto.",
    "finetune.busy": "A fine-tuning job is already running; wait for it to finish or cancel it, then start again.",
    "train.cancelled": "Training was cancelled; nothing was saved.",
    "train.name_taken": "A model named {name!r} appeared while this one was being written; nothing was overwritten. Choose another name.",
    # How an error message names a setting (the `name` parameter of the errors above).
    "setting.max_new_tokens": "max_new_tokens",
    "setting.do_sample": "do_sample",
    "setting.temperature": "temperature",
    "setting.top_k": "top_k",
    "setting.top_p": "top_p",
    "setting.typical_p": "typical_p",
    "setting.repetition_penalty": "repetition_penalty",
    "setting.no_repeat_ngram_size": "no_repeat_ngram_size",
    "setting.stop_sequences": "stop_sequences",
    "setting.seed": "seed",
    "setting.top_alternatives": "top_alternatives",
    "setting.learning_rate": "learning_rate",
    "setting.epochs": "epochs",
    "setting.max_steps": "max_steps",
    "setting.batch_size": "batch_size",
    "setting.gradient_accumulation": "gradient_accumulation",
    "setting.block_size": "block_size",
    "setting.warmup_steps": "warmup_steps",
    "setting.weight_decay": "weight_decay",
    "setting.max_grad_norm": "max_grad_norm",
    "setting.val_fraction": "val_fraction",
    "setting.eval_every": "eval_every",
    "setting.lora_rank": "lora_rank",
    "setting.lora_alpha": "lora_alpha",
    "setting.lora_dropout": "lora_dropout",
    # Server-rendered views (render.py): token view, hover cards, stats line, legend, banner, surprisal plot
    "view.empty": "Generate something to see each token's probability.",
    "tip.first": "First token: no prefix to predict it from.",
    "tip.bytes": "bytes",
    "tip.piece": "token {i} of the {n} that spell {char}",
    "tip.sampled": "sampled from {p}",
    "tip.rank": "rank",
    "tip.entropy": "entropy {bits} bits",
    "tip.tokens": "{n} tokens",
    "tip.joint": "joint probability {p}",
    "tip.incomplete": "These bytes are not a whole character (cut by the context window, or the run ended inside it).",
    "tip.pieces_hint": "Each segment of the strip below the character is one token: hover or Tab to it.",
    "legend.rank": "Rank of the chosen token (GLTR)",
    "legend.prob": "Model's probability of the chosen token",
    "legend.prompt": "prompt (dotted)",
    "legend.beyond": "beyond 100",
    "stats.ttft": "time to first token **{ms} ms**",
    "stats.ttft_pending": "time to first token …",
    "stats.tps": "**{tps} tokens/s**",
    "stats.tps_pending": "tokens/s …",
    "stats.ppl": "prompt perplexity **{ppl}**",
    "stats.ppl_na": "prompt perplexity n/a",
    "stats.counts": "{prompt} prompt + {new} new tokens",
    "stats.seed": "seed {seed}",
    "stats.running": "generating…",
    "stats.finish.length": "stopped at max tokens",
    "stats.finish.eos": "ended at end-of-text",
    "stats.finish.stop_sequence": "hit a stop sequence",
    "stats.finish.stopped": "stopped by you",
    "stats.saved": "saved as run #{id}",
    "stats.branched": "branched from {parent} at position {position}",
    "stats.parent_run": "run #{id}",
    "stats.parent_unsaved": "an unsaved run",
    "banner.model": "Model in use: <b>{model}</b>",
    "banner.asked": " (asked for {requested})",
    "banner.sep": ". ",
    "surprisal.title": "How surprised the model was by each token",
    "surprisal.x": "position",
    "surprisal.y": "surprisal (bits)",
    "surprisal.prompt": "prompt",
    "surprisal.output": "output",
    "surprisal.hover": "surprisal",
    "surprisal.rank": "rank",
    "surprisal.entropy": "entropy",
    "attention.no_cjk_font": "No CJK font is installed, so Chinese characters in this image are drawn as boxes. Install one (Debian/Ubuntu: apt-get install fonts-noto-cjk) and download it again.",
    # Notices about a run (playground.errors.Notice keys)
    'notice.no_gpu': 'CUDA was requested but no usable GPU was found: running on the CPU.',
    'notice.no_gpu_onnx': 'CUDA was requested but onnxruntime cannot use a GPU here: running on the CPU.',
    'notice.int8_cpu': 'int8 dynamic quantization runs on the CPU provider only: running on the CPU.',
    'notice.cuda_failed': 'The CUDA provider failed to initialise ({provider} is running): running on the CPU.',
    'notice.random_weights': 'Randomly initialised weights: for speed measurements only; its text and quality numbers mean nothing.',
    'notice.hub_fallback': "The model hub is unreachable and '{model}' is not cached: using the offline demo model ({demo}) instead.",
    'notice.empty_prompt': 'Empty prompt: generation starts from the {token} token.',
    'notice.unknown_chars': "{count} prompt tokens are {unk}: this model's vocabulary lacks {chars}. The model sees an unknown token there.",
    'notice.prompt_dropped': 'The prompt has {tokens} tokens but only {room} fit beside {new} new tokens in the {context}-token context: the first {dropped} tokens were dropped.',
    'notice.cut_character': 'The output ends inside a character: its last bytes ({bytes}) are not in the text. The token records keep them; a few more tokens would complete the character.',
    'notice.branch_in_character': "Branched at token {index} of the {size} that spell {char!r}: kept its bytes before it ({kept}) and put the alternative's bytes ({alternative}) after them; the output goes on from there and completes the character it starts.",
    'notice.not_saved': 'This run was not saved to the history: {error}.',
}

# Terms follow the Chinese tutorials our users read (e.g. 《动手学深度学习》): 词元 for token, 采样, 贪心解码,
# 温度, 随机种子, 注意力头, 困惑度. Product and method names (GPT-2, ONNX, PyTorch, top-k, top-p) stay as they are.
ZH_CN: dict[str, str] = {
    "app.tab.generate": "生成",
    "app.tab.attention": "注意力",
    "app.tab.compare": "对比",
    "app.tab.benchmark": "基准测试",
    "app.tab.history": "历史记录",
    "app.history_disabled": "历史记录已停用：{reason}",
    "app.login": "使用 GPT-2 Playground 需要先登录。",
    "generate.prompt": "提示词",
    "generate.model": "模型",
    "generate.model_info": "models/ 文件夹中的模型，或输入 Hub 上的模型 ID（如 distilgpt2）",
    "generate.backend": "后端",
    "generate.variant": "ONNX 变体",
    "generate.variant_info": "fp16 需要 GPU；int8 在 CPU 上运行",
    "generate.generate": "生成",
    "generate.stop": "停止",
    "generate.max_new_tokens": "最多生成词元数",
    "generate.do_sample": "采样（关闭 = 贪心解码）",
    "generate.temperature": "温度",
    "generate.top_k": "Top-k（0 = 关闭）",
    "generate.top_p": "Top-p（1 = 关闭）",
    "generate.seed": "随机种子（留空 = 随机）",
    "generate.advanced": "高级设置",
    "generate.typical_p": "Typical-p（1 = 关闭）",
    "generate.repetition_penalty": "重复惩罚（1 = 关闭）",
    "generate.no_repeat_ngram_size": "禁止重复的 n-gram 长度（0 = 关闭）",
    "generate.stop_sequences": "停止序列（每行一个；\\n 表示换行）",
    "generate.top_alternatives": "每个词元记录的候选数",
    "generate.output": "输出",
    "generate.colour_by": "词元着色依据",
    "generate.colour_prob": "概率",
    "generate.colour_rank": "排名（GLTR）",
    "generate.branch": "从候选词元分支",
    "generate.branch_help": "保留上次运行到某个词元之前的内容，把这个词元换成它的一个候选词元，再用相同的设置、种子和后端"
                            "继续生成。分支会连同它的来源一起存入历史记录。",
    "generate.branch_token": "上次运行中的词元",
    "generate.branch_alternative": "候选词元",
    "generate.branch_button": "从这个候选词元继续",
    "generate.records": "逐词元记录（JSON）",
    "generate.branch_pick": "请先生成一段文本，再选一个词元和它的一个候选词元。",
    "generate.nothing_running": "当前没有正在进行的生成。",
    "attention.intro": "“生成”页上一次运行的注意力，由生成它的后端计算，每次运行只算一次（最多取最后 {max_tokens} 个词元）。"
                       "每一行是一个查询词元，每一列是它所关注的词元。",
    "attention.compute": "计算注意力",
    "attention.layer": "层",
    "attention.head": "注意力头",
    "attention.query": "高亮某个词元所在的行",
    "attention.mean_heads": "所有头的平均",
    "attention.head_n": "第 {head} 个头",
    "attention.no_query": "（无）",
    "attention.all_heads": "本层的所有注意力头",
    "attention.png": "热力图（PNG）",
    "attention.svg": "热力图（SVG）",
    "attention.npz": "注意力张量（.npz）",
    "attention.download": "下载",
    "attention.generate_first": "请先在“生成”页生成一段文本。",
    "attention.computed": "由 **{backend}** 计算，共 {tokens} 个词元（{layers} 层 × {heads} 个头）。",
    "attention.compute_first": "请先计算注意力。",
    "compare.intro": "用“生成”页的提示词和设置在两侧各运行一次，每侧是一个模型、一个后端以及（ONNX Runtime 时）一个变体："
                     "基础模型对微调模型、PyTorch 对 ONNX、一个模型对另一个模型。两侧使用同一个种子（种子留空时只随机抽取"
                     "一次，两侧共用）。两次运行都会存入历史记录。",
    "compare.side_a": "**A 侧**",
    "compare.side_b": "**B 侧**",
    "compare.swap": "⇄ 交换两侧",
    "compare.run": "对比 A 与 B",
    "compare.running": "正在运行 {side} 侧：{label}…",
    "compare.seed": "两侧使用同一个种子：**{seed}**。",
    "compare.identical": "**输出完全一致**，共 {tokens} 个词元。",
    "compare.end": "（结束）",
    "compare.divergence": "**在第 {index} 个生成词元处首次出现分歧**：A 选了 `{token_a}`，B 选了 `{token_b}`（红框标出）。",
    "compare.max_diff": "在此之前，所选词元概率的最大差值：**{diff:.4f}**。",
    "compare.speed": "解码速度：A **{speed_a:.1f}** 对 B **{speed_b:.1f}** 词元/秒（B 是 A 的 **{speedup:.2f}×**；各为一次"
                     "实时运行，受控的测量请看“基准测试”页）。",
    "compare.different_tokenizers": "**两侧的分词器不同**（A：{vocab_a} 个词元，B：{vocab_b} 个）：同一个 id 在两侧代表"
                                    "不同的词元，无法逐个词元对比，因此没有分歧位置，也没有概率图。请并排阅读两段输出。",
    "compare.plot_title": "两侧给 A 所选词元的概率",
    "compare.plot_x": "位置",
    "compare.plot_y": "p(A 所选词元)",
    "compare.diverged": "出现分歧",
    "app.tab.finetune": "微调",
    "finetune.intro": "用你自己的文本微调 GPT-2：全量微调（更新所有权重）或 LoRA（训练小型适配器，结束时合并进权重）。文本中留出的一部分用于在微调前后测量验证集困惑度。结果是 models 文件夹中的一个新模型，会立即出现在所有模型列表中。同一时间只运行一个任务；其间仍可生成文本，只是会慢一些。",
    "finetune.base": "基础模型",
    "finetune.name": "新模型的名称",
    "finetune.name_info": "models/ 下的文件夹名：字母、数字、- _ .",
    "finetune.paste": "训练文本",
    "finetune.paste_info": "粘贴文本：以空行分隔的段落（没有空行时每行一个）就是一个个样本",
    "finetune.upload": "…或上传文件（.txt、.jsonl、.csv；最大 20 MB）",
    "finetune.upload_note": "上传的文件会取代粘贴的文本。文件读取后立即删除，绝不会再被提供下载；最大 20 MB。.jsonl 文件每行需要一个 `text` 字段；.csv 文件需要选择用于训练的列。",
    "finetune.column": "CSV 列",
    "finetune.column_info": "存放文本的那一列",
    "finetune.method_label": "方法",
    "finetune.method_full": "全量微调",
    "finetune.method_lora": "LoRA",
    "finetune.learning_rate": "学习率",
    "finetune.learning_rate_info": "留空 = 全量微调 5e-5，LoRA 2e-4",
    "finetune.seed": "随机种子",
    "finetune.epochs": "训练轮数",
    "finetune.max_steps": "最大步数",
    "finetune.max_steps_info": "0 = 按训练轮数训练",
    "finetune.batch_size": "批大小",
    "finetune.accumulation": "梯度累积",
    "finetune.block_label": "块长度（词元）",
    "finetune.advanced": "优化器",
    "finetune.warmup": "预热步数",
    "finetune.weight_decay": "权重衰减",
    "finetune.clipping": "梯度裁剪",
    "finetune.clipping_info": "梯度范数上限；0 = 关闭",
    "finetune.lora": "LoRA 设置",
    "finetune.lora_rank": "秩",
    "finetune.lora_alpha": "Alpha",
    "finetune.lora_dropout": "Dropout",
    "finetune.lora_targets": "目标模块",
    "finetune.lora_targets_info": "GPT-2：c_attn（注意力的 q、k、v），c_proj（输出投影），c_fc（MLP）",
    "finetune.check": "检查数据",
    "finetune.start": "开始微调",
    "finetune.cancel": "取消",
    "finetune.compare": "与基础模型对比",
    "finetune.preview_source": "数据：<b>{source}</b>，按 {encoding} 读取。",
    "finetune.preview_stats": "{texts} 段文本，{tokens} 个词元；{short} 段短于一个块；[UNK] 占比 {unk}。",
    "finetune.preview_blocks": "每块 {block} 个词元：{train} 块用于训练，{val} 块留作验证。",
    "finetune.preview_run": "本次运行：在 {device}（{precision}）上训练 {steps} 步，学习率 {rate}。",
    "finetune.preview_examples": "前几个样本",
    "finetune.col_index": "#",
    "finetune.col_tokens": "词元数",
    "finetune.col_chars": "字符数",
    "finetune.col_text": "文本",
    "finetune.no_job": "还没有微调任务。",
    "finetune.job_head": "任务 #{id}：{name}（基于 {base}）· {status}",
    "finetune.status.running": "运行中",
    "finetune.status.complete": "已完成",
    "finetune.status.cancelled": "已取消",
    "finetune.status.error": "失败",
    "finetune.phase.queued": "排队中",
    "finetune.phase.loading": "正在加载模型",
    "finetune.phase.evaluating": "正在测量验证损失",
    "finetune.phase.training": "训练中",
    "finetune.phase.saving": "正在保存",
    "finetune.phase.complete": "完成",
    "finetune.step": "第 {step} / {total} 步",
    "finetune.tokens_per_s": "{tps} 词元/秒",
    "finetune.eta": "剩余 {eta}",
    "finetune.elapsed": "已用 {elapsed}",
    "finetune.train_loss": "训练损失 {loss}",
    "finetune.val_loss": "验证损失 {loss}",
    "finetune.done": "新模型：<b>{name}</b>（由 {base} 微调而来），已出现在所有模型列表中。",
    "finetune.perplexity": "验证集困惑度：<b>{before} → {after}</b>（{change}）。",
    "finetune.seconds": "{steps} 步，用时 {seconds} 秒。",
    "finetune.cancelled": "任务已取消，没有保存任何内容。",
    "finetune.failed": "任务失败，没有保存任何内容。原因：",
    "finetune.started": "正在微调 {name}：共 {steps} 步。",
    "finetune.cancelling": "正在取消：任务会在当前这一步结束后停止。",
    "finetune.nothing_running": "当前没有正在运行的微调任务。",
    "finetune.plot_title": "损失",
    "finetune.plot_x": "步数",
    "finetune.plot_y": "损失",
    "finetune.plot_train": "训练",
    "finetune.plot_val": "验证",
    "bench.intro": "在 **{model}** 上为本项目自己的解码循环计时：贪心解码，新词元数固定，先预热再重复测量，所有测试单元用同一"
                   "线程设置。质量以 PyTorch fp32 在一段固定文本上的结果为基准。结果也会存入历史数据库（`bench` 表）。",
    "bench.cells": "测试单元（本机能运行的组合）",
    "bench.prompt_tokens": "提示词元数",
    "bench.new_tokens": "新词元数",
    "bench.repeats": "重复次数",
    "bench.run": "运行基准测试",
    "bench.files": "下载（CSV、JSON、Markdown、PNG）",
    "bench.choose_cell": "请至少选择一个测试单元。",
    "bench.must_fit": "提示词元数（≥ 1）加新词元数（≥ 2）不能超过模型的上下文长度 {context}。",
    "bench.machine": "{cpu}（{cores} 核）",
    "bench.machine_gpu": "{cpu}（{cores} 核，{gpu}）",
    "bench.note": "共 {cells} 个测试单元，运行于 {machine}，{threads} 个线程，重复 {repeats} 次。",
    "bench.random_weights": "随机权重：质量相关的列没有意义。",
    "bench.speed_title": "解码速度（柱上标注相对 PyTorch fp32 的加速比）",
    "bench.ttft_title": "首词元延迟",
    "bench.tokens_per_s": "词元/秒",
    "bench.col.backend": "后端",
    "bench.col.variant": "变体",
    "bench.col.provider": "执行提供程序",
    "bench.col.prompt_tokens": "提示词元数",
    "bench.col.new_tokens": "新词元数",
    "bench.col.ttft_ms": "首词元延迟 (ms)",
    "bench.col.decode_tokens_per_s": "解码速度 (词元/秒)",
    "bench.col.speedup_vs_torch_fp32": "相对 PyTorch fp32 的加速比",
    "bench.col.latency_p50_ms": "延迟 p50 (ms)",
    "bench.col.latency_p90_ms": "延迟 p90 (ms)",
    "bench.col.peak_rss_mb": "内存峰值 (MB)",
    "bench.col.size_mb": "模型大小 (MB)",
    "bench.col.top1_agreement": "top-1 一致率",
    "history.disabled": "**历史记录已停用。** {reason}\n\n生成照常可用，只是运行不会被保存。",
    "history.search": "搜索提示词和输出",
    "history.search_placeholder": "要查找的文字（按字面匹配）",
    "history.model": "模型",
    "history.backend": "后端",
    "history.all": "（全部）",
    "history.refresh": "刷新",
    "history.col.id": "编号",
    "history.col.time": "时间（UTC）",
    "history.col.model": "模型",
    "history.col.backend": "后端",
    "history.col.prompt": "提示词",
    "history.col.tokens_per_s": "词元/秒",
    "history.col.status": "状态",
    "history.use": "使用这些设置",
    "history.attention": "查看注意力",
    "history.delete": "删除这条记录…",
    "history.confirm_delete": "确定删除",
    "history.cancel": "取消",
    "history.select_hint": "在表格中选择一条运行记录即可打开。",
    "history.output": "输出",
    "history.settings": "设置",
    "history.metrics": "指标",
    "history.export": "导出",
    "history.format": "格式",
    "history.scope": "范围",
    "history.scope_shown": "表格中的运行",
    "history.scope_all": "全部运行",
    "history.export_button": "导出",
    "history.download": "下载",
    "history.gone": "运行 {run_id} 已不存在。",
    "history.run_title": "### 运行 #{run_id} · {time} UTC · {status}",
    "history.run_error": "错误：`{error}`",
    "history.select_first": "请先选择一条运行记录。",
    "history.already_deleted": "这条运行记录已经删除了。",
    "history.deleted": "已删除运行 #{run_id}。",
    "history.exported": "已导出 {count} 条运行记录。",
    "history.status.complete": "完成",
    "history.status.stopped": "已停止",
    "history.status.error": "出错",
    "settings.unknown": "未知的设置项：{unknown}。可用的设置项：{known}。",
    "settings.range": "{name} = {value!r} 超出范围，允许的范围是 {interval}。",
    "settings.too_many_stops": "停止序列最多 {limit} 个，现在有 {count} 个。",
    "settings.stop_length": "每个停止序列须为 1 到 {limit} 个字符，现在有一个是 {length} 个字符。",
    "settings.context": "最多生成词元数（max_new_tokens）= {value}，超出了这个模型 {context} 个词元的上下文长度；最多可设为 {most}。",
    "settings.not_int": "{name} 必须是整数，收到的是 {value!r}。",
    "settings.not_number": "{name} 必须是数字，收到的是 {value!r}。",
    "settings.not_finite": "{name} 必须是有限的数字，收到的是 {value!r}。",
    "settings.not_bool": "采样（do_sample）只能是 true 或 false，收到的是 {value!r}。",
    "settings.not_list": "停止序列（stop_sequences）必须是字符串列表，收到的是 {value!r}。",
    "settings.prompt_type": "提示词必须是文本，收到的是 {type}。",
    "settings.prompt_too_long": "提示词有 {length:,} 个字符，上限是 {limit:,}。模型的上下文本来也只装得下最后一部分：请少粘贴一些文本。",
    "data.bad_bom": "{name} 以 {encoding} 的 BOM 头开头，但内容不是有效的 {encoding}。请重新保存为 UTF-8。",
    "data.binary": "{name} 看起来是二进制文件（含有 NUL 字节），不是文本。请使用 .txt、.jsonl 或 .csv 文本文件；UTF-16 文本需要带 BOM 头，或者另存为 UTF-8。",
    "data.damaged_utf8": "{name} 是 UTF-8 文本，但有 {bad} 个损坏的字节（第一个在第 {offset} 字节）：文件被截断或混用了多种编码。请修复或重新保存为 UTF-8。",
    "data.unknown_encoding": "{name} 不是 UTF-8、UTF-16（带 BOM 头）、GB18030/GBK、Big5 或 Windows-1252 编码的文本：大部分内容无法解码。请另存为 UTF-8。",
    "data.empty": "{name} 中没有可用于训练的文本（为空或只有空白）。",
    "data.not_text": "训练数据必须是文本。",
    "data.too_large": "数据有 {size_mb} MB，上限是 {limit_mb} MB。请减少文本或换一个更小的文件。",
    "data.format": "{name}：训练数据必须是文本文件（{formats}）。",
    "data.unreadable": "无法读取 {name}。",
    "data.bad_csv": "{name} 不是有效的 CSV 文件。",
    "data.no_header": "{name} 没有表头行：第一行必须是各列的名称。",
    "data.choose_column": "{name} 有多列（{columns}）：请选择存放文本的那一列。",
    "data.no_column": "{name} 中没有 {column!r} 列；它的列是：{columns}。",
    "data.bad_jsonl": "{name} 第 {line} 行：不是有效的 JSON。每行必须是一个 JSON 对象。",
    "data.no_field": "{name} 第 {line} 行：没有 {field!r} 文本字段。每行必须是带有这个字段的 JSON 对象。",
    "data.too_short": "{name} 只有 {tokens} 个词元；以每块 {block} 个词元微调至少需要 {needed} 个（一块用于训练，一块用于验证）。请增加文本，或把块长度设为不超过 {most}。",
    "data.short_texts": "{texts} 段文本中有 {short} 段短于一个 {block} 词元的块：它们会被拼接在一起，不会丢弃任何一段。",
    "data.unk": "{fraction:.1%} 的词元是 [UNK]：这些字符不在该模型的词表中，模型既学不会也写不出它们。请检查文件的编码，或换一个词表覆盖这些文本的模型。",
    "finetune.unknown": "未知的微调设置项：{unknown}。可用的设置项：{known}。",
    "finetune.method": "method={value!r} 不是可用的微调方法；请使用：{allowed}。",
    "finetune.device": "device={value!r} 不可用；请使用：{allowed}。",
    "finetune.range": "{name} = {value!r} 超出范围，允许的范围是 {interval}。",
    "finetune.targets": "lora_target_modules={value} 必须是该模型中的一个或多个模块名，例如 c_attn、c_proj、c_fc。",
    "finetune.block_size": "块长度 block_size={value} 超出了这个模型 {context} 个词元的上下文长度；最多可设为 {context}。",
    "finetune.not_int": "{name} 必须是整数，收到的是 {value!r}。",
    "finetune.not_number": "{name} 必须是数字，收到的是 {value!r}。",
    "finetune.not_finite": "{name} 必须是有限的数字，收到的是 {value!r}。",
    "finetune.name_missing": "请给新模型起个名字（字母、数字、- _ .），例如 my-gpt2。",
    "finetune.name_path": "{name!r} 是一个路径；新模型的名称必须是普通的文件夹名，例如 my-gpt2。",
    "finetune.name_hidden": "{name!r} 会成为隐藏文件夹；名称请以字母或数字开头。",
    "finetune.name_chars": "{name!r} 不能用作模型名称：最多 {most} 个字符，只能用字母、数字、“-”、“_”或“.”。",
    "finetune.name_reserved": "{name!r}：以 random- 开头的名称留给随机初始化的模型；请换一个。",
    "finetune.name_taken": "已经有名为 {name!r} 的模型；请换一个名称，或先删除那个文件夹。",
    "finetune.not_gpt2": "'{model}' 是 {model_type} 模型；这里只能微调 GPT-2 系列模型（model_type 为 gpt2），例如 gpt2、distilgpt2、demo 或 demo-zh。",
    "finetune.no_cuda": "要求使用 device=cuda，但这里没有可用的 CUDA GPU；请使用 cpu 或 auto。",
    "finetune.busy": "已有一个微调任务在运行；请等它结束或取消它，然后再开始。",
    "train.cancelled": "训练已取消，没有保存任何内容。",
    "train.name_taken": "在写入这个模型时出现了同名模型 {name!r}；没有覆盖任何内容。请换一个名称。",
    "setting.max_new_tokens": "最多生成词元数（max_new_tokens）",
    "setting.do_sample": "采样（do_sample）",
    "setting.temperature": "温度（temperature）",
    "setting.top_k": "top_k",
    "setting.top_p": "top_p",
    "setting.typical_p": "typical_p",
    "setting.repetition_penalty": "重复惩罚（repetition_penalty）",
    "setting.no_repeat_ngram_size": "禁止重复的 n-gram 长度（no_repeat_ngram_size）",
    "setting.stop_sequences": "停止序列（stop_sequences）",
    "setting.seed": "随机种子（seed）",
    "setting.top_alternatives": "每个词元记录的候选数（top_alternatives）",
    "setting.learning_rate": "学习率（learning_rate）",
    "setting.epochs": "训练轮数（epochs）",
    "setting.max_steps": "最大步数（max_steps）",
    "setting.batch_size": "批大小（batch_size）",
    "setting.gradient_accumulation": "梯度累积（gradient_accumulation）",
    "setting.block_size": "块长度（block_size）",
    "setting.warmup_steps": "预热步数（warmup_steps）",
    "setting.weight_decay": "权重衰减（weight_decay）",
    "setting.max_grad_norm": "梯度裁剪（max_grad_norm）",
    "setting.val_fraction": "验证集比例（val_fraction）",
    "setting.eval_every": "验证间隔（eval_every）",
    "setting.lora_rank": "LoRA 秩（lora_rank）",
    "setting.lora_alpha": "LoRA alpha（lora_alpha）",
    "setting.lora_dropout": "LoRA dropout（lora_dropout）",
    # Server-rendered views (render.py): token view, hover cards, stats line, legend, banner, surprisal plot
    "view.empty": "生成一段文字后，这里会显示每个词元的概率。",
    "tip.first": "第一个词元：前面没有上下文可供预测。",
    "tip.bytes": "字节",
    "tip.piece": "拼成「{char}」的 {n} 个词元中的第 {i} 个",
    "tip.sampled": "采样分布中为 {p}",
    "tip.rank": "排名",
    "tip.entropy": "熵 {bits} 比特",
    "tip.tokens": "{n} 个词元",
    "tip.joint": "联合概率 {p}",
    "tip.incomplete": "这些字节不构成完整的字符（被上下文窗口截断，或生成在字符中途结束）。",
    "tip.pieces_hint": "字符下方色条的每一段是一个词元：悬停或用 Tab 键查看。",
    "legend.rank": "所选词元的排名（GLTR）",
    "legend.prob": "模型给所选词元的概率",
    "legend.prompt": "提示词（虚线）",
    "legend.beyond": "100 名以外",
    "stats.ttft": "首词元延迟 **{ms} 毫秒**",
    "stats.ttft_pending": "首词元延迟 …",
    "stats.tps": "**{tps} 词元/秒**",
    "stats.tps_pending": "词元/秒 …",
    "stats.ppl": "提示词困惑度 **{ppl}**",
    "stats.ppl_na": "提示词困惑度 无",
    "stats.counts": "提示词 {prompt} 个 + 新生成 {new} 个词元",
    "stats.seed": "随机种子 {seed}",
    "stats.running": "生成中…",
    "stats.finish.length": "达到最大词元数后停止",
    "stats.finish.eos": "遇到文本结束符",
    "stats.finish.stop_sequence": "遇到停止序列",
    "stats.finish.stopped": "已被你停止",
    "stats.saved": "已保存为第 {id} 条记录",
    "stats.branched": "从{parent}的位置 {position} 分支而来",
    "stats.parent_run": "第 {id} 条记录",
    "stats.parent_unsaved": "一条未保存的记录",
    "banner.model": "当前模型：<b>{model}</b>",
    "banner.asked": "（你请求的是 {requested}）",
    "banner.sep": "。",
    "surprisal.title": "模型对每个词元的“意外程度”",
    "surprisal.x": "位置",
    "surprisal.y": "意外度（比特）",
    "surprisal.prompt": "提示词",
    "surprisal.output": "输出",
    "surprisal.hover": "意外度",
    "surprisal.rank": "排名",
    "surprisal.entropy": "熵",
    "attention.no_cjk_font": "系统未安装 CJK 字体，图中的中文会显示为方框。请安装一个（Debian/Ubuntu：apt-get install fonts-noto-cjk）后重新下载。",
    # Notices about a run (playground.errors.Notice keys)
    'notice.no_gpu': '请求使用 CUDA，但没有找到可用的 GPU：改在 CPU 上运行。',
    'notice.no_gpu_onnx': '请求使用 CUDA，但 onnxruntime 在这里无法使用 GPU：改在 CPU 上运行。',
    'notice.int8_cpu': 'int8 动态量化只能在 CPU 执行器上运行：改在 CPU 上运行。',
    'notice.cuda_failed': 'CUDA 执行器初始化失败（实际运行的是 {provider}）：改在 CPU 上运行。',
    'notice.random_weights': '随机初始化的权重：只用于测速，它生成的文本和质量指标都没有意义。',
    'notice.hub_fallback': "无法连接模型 Hub，本地缓存里也没有 '{model}'：改用离线演示模型（{demo}）。",
    'notice.empty_prompt': '提示词为空：从 {token} 词元开始生成。',
    'notice.unknown_chars': '提示词中有 {count} 个词元是 {unk}：该模型的词表里没有 {chars}，模型在这些位置只看到一个未知词元。',
    'notice.prompt_dropped': '提示词有 {tokens} 个词元，但在 {context} 个词元的上下文里，除去 {new} 个新词元只能放下 {room} 个：前 {dropped} 个词元已被丢弃。',
    'notice.cut_character': '输出结束在一个字符的中间：最后几个字节（{bytes}）没有计入文本，逐词元记录中仍保留它们；再多生成几个词元就能补全这个字符。',
    'notice.branch_in_character': '在拼成 {char!r} 的 {size} 个词元中的第 {index} 个处分支：保留它之前的字节（{kept}），接上候选词元的字节（{alternative}），输出从这里继续，并补全由此开始的字符。',
    'notice.not_saved': '这次生成没有保存到历史记录：{error}。',
}

STRINGS: dict[str, dict[str, str]] = {"en": EN, "zh-CN": ZH_CN}

# The browser picks a locale from navigator.language among Gradio's own languages only (zh-CN and
# zh-TW among them, not zh, zh-HK or zh-SG), so Traditional-Chinese browsers get the Simplified text too.
I18N = gr.I18n(en=EN, **{"zh-CN": ZH_CN, "zh-TW": ZH_CN})

# Gradio does not translate the login page's message: both languages in one string.
AUTH_MESSAGE = f"{EN['app.login']} {ZH_CN['app.login']}"


def translated(key: str) -> Any:
    """A label, info, placeholder, Button or Markdown value (Tab and Accordion labels too) that the browser shows
    in its language. Fails here, at build time, on a key that does not exist."""
    if key not in EN:
        raise KeyError(f"no UI string {key!r} in playground/ui/i18n.py")
    return I18N(key)


def t(key: str, lang: str = "en", **params: Any) -> str:
    """The string `key` in `lang` (English for a language we do not have), with `params` filled in."""
    return STRINGS.get(lang, EN)[key].format(**params)


def placeholders(text: str) -> set[str]:
    """The `{fields}` of a template, conversion and format spec included, e.g. {"{value!r}", "{diff:.4f}"}."""
    fields = set()
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is not None:
            fields.add("{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return fields


_LANGUAGE_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?", re.ASCII)


def language_of_header(accept_language: str | None) -> str:
    """"zh-CN" when the most preferred language of an Accept-Language header is any Chinese (zh, zh-CN,
    zh-Hans, zh-SG, zh-TW, zh-HK: Simplified beats English for all of them), else "en".

    Only the most preferred language counts, as in the browser, which shows Gradio's labels in the
    language of `navigator.language` (the first of the list) with English for anything we lack: a
    "fr-FR, zh-CN;q=0.5" page is English there, so the server's text is English too.
    """
    ranked = []
    for order, part in enumerate((accept_language or "").split(",")):
        match = _LANGUAGE_RANGE.match(part)
        if not match or match.group(1) == "*":
            continue
        try:
            q = float(match.group(2)) if match.group(2) is not None else 1.0
        except ValueError:
            continue
        if q > 0:
            ranked.append((-q, order, match.group(1).lower()))
    if not ranked:
        return "en"
    tag = min(ranked)[2]
    return "zh-CN" if tag == "zh" or tag.startswith("zh-") else "en"


def lang_of(request: gr.Request | None) -> str:
    """The language of the browser that sent `request` ("en" when there is no request, as in the API)."""
    if request is None:
        return "en"
    headers = getattr(request, "headers", None) or {}
    return language_of_header(headers.get("accept-language"))


def error_text(exc: Exception, lang: str) -> str:
    """A domain error's message for the UI: translated when it carries a known key, else its own (English) text.

    The `name` parameter, a setting's name, is shown the way that language names the setting.
    """
    key, params = getattr(exc, "key", None), dict(getattr(exc, "params", None) or {})
    if lang == "en" or not key or key not in STRINGS.get(lang, {}):
        return str(exc)
    if f"setting.{params.get('name')}" in STRINGS[lang]:
        params["name"] = t(f"setting.{params['name']}", lang)
    try:
        return t(key, lang, **params)
    except (KeyError, IndexError, ValueError):  # a key raised with other parameters than the template's
        return str(exc)


def ui_error(exc: Exception, request_or_lang: gr.Request | str | None) -> gr.Error:
    """The gr.Error that shows a domain error in the browser's language: `raise ui_error(exc, request) from None`."""
    lang = request_or_lang if isinstance(request_or_lang, str) else lang_of(request_or_lang)
    return gr.Error(error_text(exc, lang))


def error(key: str, lang: str, **params: Any) -> gr.Error:
    """The UI's own error, in `lang`: `raise error("history.select_first", lang)`.

    (Gradio 6.17.3 heads every notice with its untranslated type, "Error", "Warning" or "Info", and
    shows no `title`, so none is given.)"""
    return gr.Error(t(key, lang, **params))


def warning(key: str, lang: str, **params: Any) -> None:
    """Show a warning notice in `lang`."""
    gr.Warning(t(key, lang, **params))


def info(key: str, lang: str, **params: Any) -> None:
    """Show an information notice in `lang`."""
    gr.Info(t(key, lang, **params))


def localize_on_load(outputs: Sequence[Any], render: Callable[[str], Any]) -> None:
    """Fill `outputs` with `render(lang)` when a page loads, in that browser's language: for the text the browser
    does not translate itself (choice labels, Dataframe headers, HTML, text with numbers in it). Call it
    inside the Blocks, after the components."""

    def on_load(request: gr.Request):
        return render(lang_of(request))

    gr.on(None, on_load, inputs=None, outputs=list(outputs), queue=False, show_progress="hidden", api_visibility="private")
