"""Write the generated rules' paraphrases once, with the embedded LLM, and store them as data
(`simulators/paraphrases.json`, read by `rulegen`).

    python -m explainer.simulators.paraphrase_rules [--model qwen2.5-coder-0.5b] [--per-phrase 2]

Every phrase of `rulegen`'s tables (fields, spans, token classes, operators, positions, word
families) is sent to the LLM with the instruction to say the same thing in other words; each
reply that is one line, not too long, not the phrase itself and within MIN_COS of the phrase (MiniLM
cosine: a reply further away changed the meaning, "raise statements" -> "error messages") is kept. Replies are sampled at
temperature 0.8 with fixed seeds, so the file is reproducible on the same model and backend; the
file records both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from ..llm import make_client
from ..llm.client import ChatRequest
from . import rulegen
from .rulegen import PARAPHRASES

_SYSTEM = "You rewrite short phrases about Python source code in other words."
_ASK = ("Rewrite this phrase about parts of Python code with different words and the same meaning. Reply with "
        "the new phrase only.\nPhrase: {phrase}")
MAX_CHARS = 120
MIN_COS = 0.6  # a paraphrase further than this from its phrase (MiniLM cosine) changed the meaning: dropped


def table_phrases() -> list[str]:
    """The first phrase of every table entry of `rulegen` (what a paraphrase is written for)."""
    out = [p[0] for p in rulegen.FIELDS.values()] + [p[0] for p in rulegen.SPANS.values()]
    out += [v[1][0] for v in rulegen._CLASSES.values()] + [v[0] for v in rulegen._OP_NAMES.values()]
    out += [f"names about {topic}" for topic, _ in rulegen.WORDS.values()]
    out += [rulegen._table_phrases(k, None)[0] for k in ("position:line_end", "position:line_start", "position:open_quote",
                                                   "position:close_quote", "position:before_open")]
    return list(dict.fromkeys(out))


def clean(reply: str, phrase: str) -> str | None:
    """The reply as a description, or None when it is not one."""
    lines = [x.strip() for x in reply.strip().splitlines() if x.strip()]
    if not lines:
        return None
    text = lines[0].strip().strip("\"'`").strip()
    for lead in ("Phrase:", "New phrase:", "Rewritten phrase:"):
        if text.lower().startswith(lead.lower()):
            text = text[len(lead):].strip()
    text = text.rstrip(".").strip()
    if not text or len(text) > MAX_CHARS or text.lower() == phrase.lower():
        return None
    return text[:1].lower() + text[1:] if not text[:2].isupper() else text


async def paraphrase(phrases: list[str], model: str | None, per_phrase: int, log) -> dict[str, list[str]]:
    client = make_client("local", model=model)
    try:
        out: dict[str, list[str]] = {}
        for i, phrase in enumerate(phrases):
            replies = []
            for seed in range(per_phrase):
                res = await client.chat(ChatRequest(messages=(("system", _SYSTEM), ("user", _ASK.format(phrase=phrase))),
                                                    max_tokens=40, temperature=0.8, seed=seed))
                text = clean(res.text, phrase)
                if text and text not in replies:
                    replies.append(text)
            out[phrase] = replies
            log(f"{i + 1}/{len(phrases)} {phrase!r} -> {replies}")
        return out
    finally:
        await client.close()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="an embedded model (default: the embedded default)")
    ap.add_argument("--per-phrase", type=int, default=2)
    ap.add_argument("--out", default=str(PARAPHRASES))
    args = ap.parse_args(argv)
    phrases = table_phrases()
    found = asyncio.run(paraphrase(phrases, args.model, args.per_phrase, lambda s: print(s, file=sys.stderr)))
    from .embedding import embed

    kept, dropped = {}, 0
    for phrase, replies in found.items():
        cos = embed(replies) @ embed([phrase])[0] if replies else []
        kept[phrase] = [r for r, c in zip(replies, cos) if c >= MIN_COS]
        dropped += len(replies) - len(kept[phrase])
    data = {"model": args.model or "default", "per_phrase": args.per_phrase, "temperature": 0.8,
            "min_cos": MIN_COS, "dropped": dropped, "paraphrases": kept}
    Path(args.out).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}: {sum(map(len, found.values()))} paraphrases of {len(phrases)} phrases", file=sys.stderr)


if __name__ == "__main__":
    main()
