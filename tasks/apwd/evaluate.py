"""APwD end to end: read pairs, embed audio (cached) and modifiers, train the retrieval system per scene
and seed, and report R@1/5/10 on the test (``eval``) split as JSON and as a markdown table laid out as
the paper's Table 2 (one row per audio encoder; per scene R@1, R@5, R@10 in %, mean +- std over seeds).

Each pair gives two queries, (s1, "remove ...") -> s2 and (s2, "add ...") -> s1; clips are ordered
[pair0.s1, pair0.s2, pair1.s1, ...] and queries [pair0 remove, pair0 add, pair1 remove, ...]. The JSON
also has R@K per direction ('remove', 'add'). Seed s draws the validation pairs (``val_fraction`` of dev), the
initialisation and the batch order; the test split is the same for every seed. std is the sample
standard deviation over seeds (0 for one seed).

Nothing is learnt or chosen from the test split: the event vocabulary (the classifier's outputs) comes
from dev, the kept epoch from the validation pairs (``RetrievalConfig.select``: smallest validation loss
by default, as in the paper), and our model's log-mels are normalised with the statistics of the scene's
dev audio (``norm="task"``, BYOL-A's evaluation) unless ``norm="weights"`` keeps the weights file's. The
JSON records, per scene, the statistics applied (``"norm"``) and per run the selection and epoch kept.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..embedders import Embedder, describe_norm, norm_record, task_normalised
from .dataset import Pair, event_vocabulary, read_pairs, scene_dirs
from .embeddings import data_key, embed_files
from .retrieval import KS, QuerySet, RetrievalConfig, query_ranks, recalls, train_retrieval
from .text import TextEncoder
from .vocab import APwDError


def pair_queries(pairs: Sequence[Pair]) -> tuple[list[Path], list[tuple[str, ...]], list[tuple[int, str, int, int]]]:
    """(clip wavs, clip event labels, queries as (query clip, text, target clip, pair index))."""
    wavs, labels, queries = [], [], []
    for i, p in enumerate(pairs):
        wavs += [p.wav1, p.wav2]
        labels += [p.s1.labels, p.s2.labels]
        queries += [(2 * i, p.modifier("s1->s2"), 2 * i + 1, i), (2 * i + 1, p.modifier("s2->s1"), 2 * i, i)]
    return wavs, labels, queries


def make_queryset(
    clip_emb: torch.Tensor,
    clip_labels: Sequence[Sequence[str]],
    queries: Sequence[tuple[int, str, int, int]],
    vocab: Sequence[str],
    texts: Sequence[str],
    text_emb: torch.Tensor,
) -> QuerySet:
    """Tensors for the retrieval system; ``texts``/``text_emb`` must hold every query's modifier. Events not
    in ``vocab`` (the training events) get no column: the classifier has no output for them."""
    col = {x: j for j, x in enumerate(vocab)}
    multi_hot = torch.zeros(len(clip_labels), len(vocab))
    for i, labs in enumerate(clip_labels):
        for x in labs:
            if x in col:
                multi_hot[i, col[x]] = 1.0
    row = {t: j for j, t in enumerate(texts)}

    def column(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long)

    return QuerySet(
        clip_emb.float(),
        multi_hot,
        text_emb.float(),
        column([x[0] for x in queries]),
        column([row[x[1]] for x in queries]),
        column([x[2] for x in queries]),
        column([x[3] for x in queries]),
        list(texts),
    )


def summarise(values: Sequence[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": list(values),
    }


def evaluate_scene(
    scene_dir: Path,
    scene: str,
    embedder: Embedder,
    text_encoder: TextEncoder,
    config: RetrievalConfig,
    seeds: Sequence[int],
    cache_dir: str | Path | None,
    progress: bool,
    norm: str = "task",
) -> dict[str, Any]:
    dev, test = read_pairs(scene_dir, "dev"), read_pairs(scene_dir, "eval")
    vocab = event_vocabulary(list(dev))  # training events only: the test split never shapes the model
    wav_d, lab_d, q_d = pair_queries(dev)
    wav_t, lab_t, q_t = pair_queries(test)
    embedder = task_normalised(
        embedder,
        wav_d,
        norm,
        cache_dir=cache_dir,
        data_id=f"apwd:{data_key(wav_d)}" if cache_dir is not None else None,
        damaged_hint="re-render the pair or remove it",
        progress=progress,
    )
    emb_d = embed_files(embedder, wav_d, cache_dir, progress=progress, desc=f"{scene}/dev embeddings")
    emb_t = embed_files(embedder, wav_t, cache_dir, progress=progress, desc=f"{scene}/eval embeddings")
    texts = sorted({x[1] for x in q_d + q_t})
    text_emb = text_encoder.encode(texts)
    dev_qs = make_queryset(emb_d, lab_d, q_d, vocab, texts, text_emb)
    test_qs = make_queryset(emb_t, lab_t, q_t, vocab, texts, text_emb)
    runs = []
    for seed in seeds:
        train, val = dev_qs.split(config.val_fraction, torch.Generator().manual_seed(seed))
        model, hist = train_retrieval(train, val, config, seed, progress, desc=f"{scene} seed {seed}")
        rank = query_ranks(model, test_qs)  # queries alternate: (s1, remove) -> s2, (s2, add) -> s1
        runs.append(
            {
                "seed": seed,
                **recalls(rank),
                "remove": recalls(rank[0::2]),
                "add": recalls(rank[1::2]),
                "selected_by": hist["selected_by"],
                "best_epoch": hist["best_epoch"],
                "epochs_run": hist["epochs_run"],
                "best_val_loss": hist["best_val_loss"],
                "best_val_recall": hist["best_val_recall"],
            }
        )
    n_gallery = test_qs.clips.shape[0] - 1
    return {
        "metrics": {f"R@{k}": summarise([r[f"R@{k}"] for r in runs]) for k in KS},
        "by_direction": {
            d: {f"R@{k}": summarise([r[d][f"R@{k}"] for r in runs]) for k in KS} for d in ("remove", "add")
        },
        "runs": runs,
        "chance": {f"R@{k}": min(1.0, k / n_gallery) for k in KS},
        "events": list(vocab),
        "n_pairs": {"dev": len(dev), "eval": len(test)},
        "n_queries": {"train+val": len(dev_qs), "test": len(test_qs)},
        "n_texts": len(texts),
        "example_texts": [q_t[0][1], q_t[1][1]],
        "norm": norm_record(embedder, norm),
        "model_identity": embedder.identity,
    }


def evaluate_apwd(
    data: str | Path,
    embedder: Embedder,
    text_encoder: TextEncoder,
    scenes: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    config: RetrievalConfig = RetrievalConfig(),
    cache_dir: str | Path | None = None,
    progress: bool = True,
    norm: str = "task",
) -> dict[str, Any]:
    """R@1/5/10 per scene, mean +- std over ``seeds``, for one audio encoder and one text encoder.
    ``norm``: "task" (our model normalised with each scene's dev-audio statistics) or "weights"."""
    found = scene_dirs(data)
    wanted = list(scenes) if scenes else sorted(found)
    missing = [s for s in wanted if s not in found]
    if missing:
        raise APwDError(f"scene(s) {missing} not in {data} (found: {', '.join(sorted(found))})")
    if not seeds:
        raise APwDError("need at least one seed")
    return {
        "format": "hear-diffbyola/apwd-results/1",
        "model": embedder.name,
        "model_identity": embedder.identity,
        "text_encoder": text_encoder.name,
        "text_encoder_identity": text_encoder.identity,
        "data": str(data),
        "seeds": list(seeds),
        "config": config.to_dict(),
        "norm": norm,
        "scenes": {
            s: evaluate_scene(found[s], s, embedder, text_encoder, config, seeds, cache_dir, progress, norm)
            for s in wanted
        },
    }


def markdown_table(results: Sequence[dict[str, Any]]) -> str:
    """Paper Table 2 layout: a row per result (audio encoder), per scene R@1 / R@5 / R@10 in %, mean +- std."""
    scenes = sorted({s for r in results for s in r["scenes"]})
    head = "| audio encoder | text | " + " | ".join(f"{s} R@{k}" for s in scenes for k in KS) + " |"
    rule = "|---|---|" + "---|" * (len(scenes) * len(KS))
    lines = [head, rule]
    for r in results:
        cells = []
        for s in scenes:
            for k in KS:
                m = r["scenes"].get(s, {}).get("metrics", {}).get(f"R@{k}")
                cells.append("–" if m is None else f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
        text = r["text_encoder"] if r["config"].get("use_text", True) else "none (audio only)"
        lines.append(f"| {r['model']} | {text} | " + " | ".join(cells) + " |")
    chance = (
        [
            f"{100 * results[0]['scenes'][s]['chance'][f'R@{k}']:.1f}" if s in results[0]["scenes"] else "–"
            for s in scenes
            for k in KS
        ]
        if results
        else []
    )
    lines.append("| chance | – | " + " | ".join(chance) + " |")
    notes = [""]
    for r in results:
        norms = "; ".join(f"{s}: {describe_norm(sc['norm'])}" for s, sc in sorted(r["scenes"].items()) if "norm" in sc)
        select = r["config"].get("select")
        if norms or select:
            notes.append(
                f"{r['model']}: checkpoint by {select or 'val-recall'}"
                + (f"; log-mel normalisation {norms}" if norms else "")
            )
    return "\n".join(lines) + "\n" + ("\n".join(notes) + "\n" if len(notes) > 1 else "")


def write_results(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "results.json", out / "results.md"
    js.write_text(json.dumps(result, indent=1))
    md.write_text(markdown_table([result]))
    return js, md
