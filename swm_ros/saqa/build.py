"""`swm saqa`: state-action-question-answer rows from stored episodes.

For every episode: start frames t, 8 horizons h each (h = 0 among them), and for every
question family a subject (blocks, direction) drawn at random per (t, h); labels come from
the privileged state at t and t+h, all (t, h) pairs of an episode at once with numpy.
Rows in an ambiguity band are dropped, then each family is balanced to 50 % yes within
each split by subsampling the majority answer (with `near_miss_share`, that share of a
family's "no" rows comes from its near misses, as far as there are any). Rows reference
images by (episode, frame); the output is one columnar HDF5 file (see docs/data-format.md).

With `contrastive`, on a branch collection (`swm collect-branches`), the questions are drawn
once per group of sibling branches (the candidates executed from one state) and asked of every
sibling; only those whose answer differs between the siblings are kept.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from swm_ros.config import load_config, to_dict
from swm_ros.data.episodes import EpisodeReader, StateArrays
from swm_ros.data.manifest import SPLITS, read_manifest, split_for_id
from swm_ros.saqa.families import DIRECTIONS, FAMILIES, NO_DIRECTION, Thresholds, get_family, noun_phrases
from swm_ros.saqa.horizons import sample_horizons, start_frames

SAQA_FORMAT = "swm_ros.saqa"
SAQA_VERSION = 1
COLUMNS: dict[str, Any] = {   # name -> dtype, one value per row
    "episode": np.int32, "t": np.int32, "h": np.int16, "family": np.int8, "subject_a": np.int8,
    "subject_b": np.int8, "direction": np.int8, "color_a": np.int16, "color_b": np.int16,
    "phrasing": np.int8, "question": np.int32, "answer": np.uint8, "split": np.int8,
}


@dataclass
class SAQAConfig:
    horizons_per_start: int = 8
    max_horizon: int = 60
    beta_alpha: float = 1.6
    beta_beta: float = 1.0
    include_zero: bool = True
    start_stride: int = 1
    min_steps_left: int = 0
    subjects_per_family: int = 1          # subject draws per (t, h) and family
    families: list[str] = field(default_factory=lambda: [f.name for f in FAMILIES])
    subject_kinds: list[str] = field(default_factory=lambda: ["block"])
    balance: bool = True
    near_miss_share: dict[str, float] = field(default_factory=dict)   # family -> share of its "no" rows
    # Branch collections (swm collect-branches) only: draw the questions once per group of
    # siblings (branches of one state) and ask them of every sibling, keeping only those whose
    # answer differs between siblings: the questions a planner's choice among them turns on.
    contrastive: bool = False
    seed: int = 0
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        for name in self.families:
            try:
                get_family(name)
            except KeyError as e:
                raise ValueError(e.args[0]) from None
        for name, share in self.near_miss_share.items():
            if name not in self.families or get_family(name).near_miss is None:
                raise ValueError(f"near_miss_share: {name!r} is not one of this build's families with near "
                                 f"misses ({[f for f in self.families if get_family(f).near_miss is not None]})")
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"near_miss_share[{name!r}] must lie in [0, 1], got {share}")
        if self.horizons_per_start < 1 or self.max_horizon < 0 or self.start_stride < 1:
            raise ValueError("horizons_per_start and start_stride must be >= 1, max_horizon >= 0")


@dataclass
class SAQAReport:
    rows: int
    candidates: int
    episodes: int
    seconds: float
    rows_per_s: float
    candidates_per_s: float
    per_family: dict[str, dict[str, int]]
    per_split: dict[str, int]
    out: str


class QuestionTable:
    """Unique question strings -> ids, shared by all episodes of a build."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._ids: dict[str, int] = {}
        self.colors: list[str] = []
        self._color_ids: dict[str, int] = {}
        self._cache: dict[tuple, np.ndarray] = {}

    def color_id(self, color: str) -> int:
        if color not in self._color_ids:
            self._color_ids[color] = len(self.colors)
            self.colors.append(color)
        return self._color_ids[color]

    def _id(self, text: str) -> int:
        i = self._ids.get(text)
        if i is None:
            i = self._ids[text] = len(self.texts)
            self.texts.append(text)
        return i

    def ids(self, family_name: str, phrases: Sequence[str], cands: np.ndarray) -> np.ndarray:
        """(C, D, P) question ids for candidate subjects x directions (D >= 1) x phrasings."""
        key = (family_name, tuple(phrases), cands.tobytes())
        if key not in self._cache:
            fam = get_family(family_name)
            dirs = range(len(fam.directions)) if fam.directions else [NO_DIRECTION]
            out = np.empty((len(cands), len(dirs), len(fam.phrasings)), dtype=np.int64)
            for c, (a, b) in enumerate(cands):
                for j, d in enumerate(dirs):
                    for p in range(len(fam.phrasings)):
                        out[c, j, p] = self._id(fam.render(p, phrases[a], phrases[b] if b >= 0 else "", d))
            self._cache[key] = out
        return self._cache[key]


def episode_rows(states: StateArrays, cfg: SAQAConfig, rng: np.random.Generator, table: QuestionTable
                 ) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Candidate rows of one episode (before balancing), which of them are near misses, and how
    many were drawn. Rows inside a family's ambiguity band are left out."""
    cols, valid, near, drawn = episode_candidates(states, cfg, rng, table)
    return {k: v[valid] for k, v in cols.items()}, near[valid], drawn


def episode_candidates(states: StateArrays, cfg: SAQAConfig, rng: np.random.Generator, table: QuestionTable
                       ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, int]:
    """Every drawn row of one episode, which are valid (outside the ambiguity band), which are
    near misses, and how many were drawn. The draws depend only on the rng, the episode's
    length and its objects, so episodes alike in those get the same questions from equal rngs."""
    n = len(states)
    t_start = start_frames(n, cfg.start_stride, cfg.min_steps_left)
    hs = sample_horizons(rng, n - 1 - t_start, cfg.horizons_per_start, cfg.max_horizon,
                         cfg.beta_alpha, cfg.beta_beta, cfg.include_zero)
    t0 = np.repeat(t_start, cfg.horizons_per_start)
    h = hs.ravel()
    t1 = t0 + h
    s0_all, s1_all = states.take(t0), states.take(t1)
    phrases = noun_phrases(states.object_kinds, states.object_colors, states.object_names)
    # colour id per object, with a trailing -1 so that subject_b = -1 (no object) maps to -1
    color_ids = np.array([table.color_id(c) for c in states.object_colors] + [-1], dtype=np.int64)
    out: dict[str, list[np.ndarray]] = {k: [] for k in COLUMNS}
    near: list[np.ndarray] = []
    valid: list[np.ndarray] = []
    drawn = 0
    for name in cfg.families:
        fam = get_family(name)
        cands = fam.candidate_subjects(states.object_kinds, cfg.subject_kinds)
        if len(cands) == 0:
            continue
        m = min(cfg.subjects_per_family, len(cands))
        p = len(t0)
        if m == 1:
            pick = rng.integers(len(cands), size=(p, 1))
            s0, s1, rows = s0_all, s1_all, np.arange(p)
        else:   # m distinct subjects per (t, h)
            pick = np.argsort(rng.random((p, len(cands))), axis=1)[:, :m]
            rows = np.repeat(np.arange(p), m)
            s0, s1 = s0_all.take(rows), s1_all.take(rows)
        pick = pick.ravel()
        a, b = cands[pick, 0], cands[pick, 1]
        nd = len(fam.directions)
        d = rng.integers(nd, size=len(a)) if nd else np.full(len(a), NO_DIRECTION)
        answer, ok = fam.label(s0, s1, a, b, d, cfg.thresholds)
        drawn += len(a)
        phr = rng.integers(len(fam.phrasings), size=len(a))
        qids = table.ids(name, phrases, cands)[pick, np.maximum(d, 0), phr]
        valid.append(ok)
        near.append(fam.near_misses(s0, s1, a, b, d, answer, cfg.thresholds))
        out["episode"].append(np.zeros(len(a)))   # filled by the caller
        out["t"].append(t0[rows])
        out["h"].append(h[rows])
        out["family"].append(np.full(len(a), fam.family_id))
        out["subject_a"].append(a)
        out["subject_b"].append(b)
        out["direction"].append(d)
        out["color_a"].append(color_ids[a])
        out["color_b"].append(color_ids[b])
        out["phrasing"].append(phr)
        out["question"].append(qids)
        out["answer"].append(answer)
        out["split"].append(np.zeros(len(a)))     # filled by the caller
    cols = {k: (np.concatenate(v) if v else np.zeros(0)).astype(COLUMNS[k]) for k, v in out.items()}
    flat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=bool)
    return cols, flat(valid), flat(near), drawn


_DRAW_COLUMNS = ("t", "h", "family", "subject_a", "subject_b", "direction", "phrasing", "question")


def _sibling_rows(key: str, siblings: Sequence[dict[str, Any]], cfg: SAQAConfig, rng: np.random.Generator,
                  table: QuestionTable) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray], list[int], int]:
    """Per sibling, the rows of the questions drawn once for the group whose answers differ
    between siblings (valid for all of them), their near-miss flags and its frame count; and
    the rows drawn in all."""
    state = rng.bit_generator.state
    drawn, n = [], []
    for e in siblings:
        with EpisodeReader(e["file"]) as ep:
            states = ep.states
        n.append(len(states))
        rng.bit_generator.state = state                # the same draws for every sibling
        drawn.append(episode_candidates(states, cfg, rng, table))
    first = drawn[0][0]
    for cols, *_ in drawn[1:]:
        if any(not np.array_equal(cols[k], first[k]) for k in _DRAW_COLUMNS):
            raise ValueError(f"branches of {key} drew different questions: siblings must have the same "
                             "length and objects")
    answers = np.stack([d[0]["answer"] for d in drawn])
    keep = np.all(np.stack([d[1] for d in drawn]), axis=0) & (answers.min(0) != answers.max(0))
    return ([{k: v[keep] for k, v in d[0].items()} for d in drawn], [d[2][keep] for d in drawn], n,
            sum(d[3] for d in drawn))


def balance_rows(cols: dict[str, np.ndarray], rng: np.random.Generator, near_miss: np.ndarray | None = None,
                 near_miss_share: dict[int, float] | None = None) -> np.ndarray:
    """Sorted indices keeping, per (split, family), equal yes and no counts; for a family id in
    `near_miss_share`, that share of its "no" rows drawn from the `near_miss` rows (all of them
    where there are fewer)."""
    keep = []
    key = cols["split"].astype(np.int64) * 256 + cols["family"].astype(np.int64)
    for k in np.unique(key):
        idx = np.flatnonzero(key == k)
        yes, no = idx[cols["answer"][idx] == 1], idx[cols["answer"][idx] == 0]
        m = min(len(yes), len(no))
        keep.append(rng.choice(yes, m, replace=False))
        share = (near_miss_share or {}).get(int(k % 256), 0.0)
        if share > 0 and near_miss is not None:
            close, other = no[near_miss[no]], no[~near_miss[no]]
            n_close = min(len(close), int(round(share * m)))
            n_close = max(n_close, m - len(other))     # too few others: more near misses
            keep += [rng.choice(close, n_close, replace=False), rng.choice(other, m - n_close, replace=False)]
        else:
            keep.append(rng.choice(no, m, replace=False))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)


def list_episodes(directory: str | Path) -> list[dict[str, Any]]:
    """[{episode_id, file (absolute), split}] from the manifest, or from *.h5 files and their attrs."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    out = []
    if manifest is not None:
        for e in manifest["episodes"]:
            path = directory / e["file"]
            if path.is_file():
                out.append({"episode_id": e["episode_id"], "file": path, "split": e["split"]})
                if "source" in e:       # a branch: its siblings share (source, replan)
                    out[-1]["group"] = f"{e['source']}/{e['replan']}"
        return out
    for path in sorted(directory.rglob("*.h5")):
        with EpisodeReader(path) as ep:
            out.append({"episode_id": ep.meta.episode_id, "file": path,
                        "split": split_for_id(ep.meta.episode_id, ep.meta.variant)})
    return out


def build_saqa(episodes: str | Path | Sequence[dict[str, Any]], out: str | Path, cfg: SAQAConfig | None = None,
               progress: bool = False, first_episodes: int | None = None) -> SAQAReport:
    """Build the SAQA file `out` from a collection directory (or an `list_episodes` list).

    `first_episodes` N keeps the collection's first N episodes: the same rows as a build when the
    collection held only those (a collection only ever grows, and rows are drawn episode by episode).
    """
    cfg = cfg or SAQAConfig()
    t_begin = time.perf_counter()
    root = Path(episodes) if isinstance(episodes, (str, Path)) else None
    eps = list_episodes(root) if root is not None else list(episodes)
    if not eps:
        raise ValueError(f"no episodes found in {episodes}")
    if first_episodes is not None:
        if not 0 < first_episodes <= len(eps):
            raise ValueError(f"first_episodes must lie in 1..{len(eps)} (the episodes found), got {first_episodes}")
        eps = eps[:first_episodes]
    rng = np.random.default_rng(cfg.seed)
    table = QuestionTable()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(eps), desc="saqa", unit="ep")
    if cfg.contrastive:
        if any("group" not in e for e in eps):
            raise ValueError(f"contrastive rows need a branch collection (swm collect-branches): {episodes} "
                             "has episodes without a source and replan")
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(eps):
            groups.setdefault(e["group"], []).append(i)
    else:
        groups = {str(i): [i] for i in range(len(eps))}
    parts: list[dict[str, np.ndarray]] = []
    near: list[np.ndarray] = []
    num_frames = [0] * len(eps)
    drawn = 0
    for key, members in groups.items():
        if cfg.contrastive:
            got = _sibling_rows(key, [eps[i] for i in members], cfg, rng, table)
        else:
            with EpisodeReader(eps[members[0]]["file"]) as ep:
                states = ep.states
            cols, near_ep, n = episode_rows(states, cfg, rng, table)
            got = [cols], [near_ep], [len(states)], n
        drawn += got[3]
        for i, cols, near_ep, frames in zip(members, *got[:3]):
            num_frames[i] = frames
            cols["episode"][:] = i
            cols["split"][:] = SPLITS.index(eps[i]["split"])
            parts.append(cols)
            near.append(near_ep)
        if bar is not None:
            bar.update(len(members))
    if bar is not None:
        bar.close()
    cols = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
    if cfg.balance:
        keep = balance_rows(cols, rng, np.concatenate(near),
                            {get_family(f).family_id: v for f, v in cfg.near_miss_share.items()})
        cols = {k: v[keep] for k, v in cols.items()}
    out = Path(out)
    _write(out, cfg, table, eps, num_frames, cols, root)
    seconds = time.perf_counter() - t_begin
    rows = len(cols["answer"])
    per_family = {}
    for f in FAMILIES:
        sel = cols["family"] == f.family_id
        if f.name in cfg.families:
            per_family[f.name] = {"rows": int(sel.sum()), "yes": int(cols["answer"][sel].sum())}
    per_split = {s: int((cols["split"] == i).sum()) for i, s in enumerate(SPLITS)}
    return SAQAReport(rows=rows, candidates=drawn, episodes=len(eps), seconds=seconds,
                      rows_per_s=rows / seconds, candidates_per_s=drawn / seconds,
                      per_family=per_family, per_split=per_split, out=str(out))


def _write(out: Path, cfg: SAQAConfig, table: QuestionTable, eps: Sequence[dict[str, Any]], num_frames: list[int],
           cols: dict[str, np.ndarray], root: Path | None) -> None:
    import os
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    str_t = h5py.string_dtype()
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = SAQA_FORMAT
            f.attrs["format_version"] = SAQA_VERSION
            f.attrs["config"] = json.dumps(to_dict(cfg))
            f.attrs["families"] = json.dumps([
                {"id": fam.family_id, "name": fam.name, "arity": fam.arity, "relative": fam.relative,
                 "directions": list(fam.directions), "phrasings": list(fam.phrasings)} for fam in FAMILIES])
            f.attrs["directions"] = json.dumps(list(DIRECTIONS))
            f.attrs["colors"] = json.dumps(table.colors)
            f.attrs["splits"] = json.dumps(list(SPLITS))
            f.attrs["episode_root"] = str(root.resolve()) if root is not None else ""
            g = f.create_group("episodes")
            files = []
            for e in eps:
                p = Path(e["file"]).resolve()
                files.append(str(p.relative_to(root.resolve())) if root is not None and p.is_relative_to(root.resolve()) else str(p))
            g.create_dataset("id", data=np.array([e["episode_id"] for e in eps], dtype=object), dtype=str_t)
            g.create_dataset("file", data=np.array(files, dtype=object), dtype=str_t)
            g.create_dataset("split", data=np.array([SPLITS.index(e["split"]) for e in eps], dtype=np.int8))
            g.create_dataset("num_frames", data=np.array(num_frames, dtype=np.int32))
            f.create_dataset("questions", data=np.array(table.texts, dtype=object), dtype=str_t)
            r = f.create_group("rows")
            for k, v in cols.items():
                kw = {"compression": "lzf", "chunks": (min(len(v), 1 << 16),)} if len(v) else {}
                r.create_dataset(k, data=v.astype(COLUMNS[k]), **kw)
            f.attrs["num_rows"] = len(cols["answer"])
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_saqa_config(path: str | Path | None, **overrides: Any) -> SAQAConfig:
    base: dict[str, Any] = {}
    if path:
        from swm_ros.config import load_yaml
        base = load_yaml(path) or {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return load_config(SAQAConfig, base, where=str(path or "saqa config"))


def cli_saqa(args: Any) -> int:
    cfg = load_saqa_config(args.config, seed=args.seed, horizons_per_start=args.horizons_per_start,
                           max_horizon=args.max_horizon, subjects_per_family=args.subjects_per_family,
                           families=args.families.split(",") if args.families else None)
    out = Path(args.out) if args.out else Path(args.episodes) / "saqa.h5"
    report = build_saqa(args.episodes, out, cfg, progress=True, first_episodes=args.first_episodes)
    print(f"{report.rows} rows ({report.candidates} drawn) from {report.episodes} episodes in "
          f"{report.seconds:.2f} s: {report.rows_per_s:,.0f} rows/s ({report.candidates_per_s:,.0f} drawn/s) -> {out}")
    for name, c in report.per_family.items():
        print(f"  {name:18s} {c['rows']:8d} rows  yes {c['yes'] / max(c['rows'], 1):.2f}")
    print("  splits: " + ", ".join(f"{k} {v}" for k, v in report.per_split.items()))
    if args.json:
        print(json.dumps(asdict(report)))
    return 0
