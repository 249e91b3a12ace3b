"""Corpus BLEU-1 to BLEU-4 with several references per hypothesis (Papineni et al. 2002), written out.

For each order n, the modified precision p_n pools over the whole corpus: every hypothesis n-gram counts
as matched at most as often as it appears in the one reference that has it most (clipping), and
p_n = sum(matched) / sum(hypothesis n-grams). The brevity penalty uses, for each hypothesis, the
reference length closest to its own (the shorter one on a tie), summed over the corpus as r, against the
summed hypothesis length c:

    BP = 1 if c > r else exp(1 - r / c)
    BLEU-N = BP * exp( (1/N) sum_{n=1..N} log p_n )          (uniform weights; 0 if some p_n is 0)

This is the definition of NLTK's `corpus_bleu` and sacrebleu (tokenize="none", smooth_method="none"),
which the tests cross-check. Scores are reported on sacrebleu's 0-100 scale. Inputs are token lists,
tokenized by the caller the same way for hypotheses and references.
"""

from __future__ import annotations

import math
from collections import Counter


def ngrams(tokens, n) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def corpus_stats(hypotheses, references, max_n=4):
    """Summed (matched[n], total[n]) for n = 1..max_n, hypothesis length c, effective reference length r."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    matched, total = [0] * max_n, [0] * max_n
    c = r = 0
    for hyp, refs in zip(hypotheses, references):
        if not refs:
            raise ValueError("every hypothesis needs at least one reference")
        c += len(hyp)
        # the reference length closest to the hypothesis length; the shorter one on a tie
        r += min((abs(len(ref) - len(hyp)), len(ref)) for ref in refs)[1]
        for n in range(1, max_n + 1):
            h = ngrams(hyp, n)
            if not h:
                continue
            best = Counter()
            for ref in refs:
                best |= ngrams(ref, n)  # max count of each n-gram over the references
            matched[n - 1] += sum(min(k, best[g]) for g, k in h.items())
            total[n - 1] += sum(h.values())
    return matched, total, c, r


def corpus_bleu(hypotheses, references, max_n=4) -> dict:
    """{"bleu1": .., ..., "bleu{max_n}": .., "precisions": [p_1..p_n in %], "bp", "hyp_len", "ref_len"}.

    hypotheses: list of token lists; references: list (one per hypothesis) of lists of token lists.
    """
    matched, total, c, r = corpus_stats(hypotheses, references, max_n)
    prec = [m / t if t else 0.0 for m, t in zip(matched, total)]
    bp = 1.0 if c > r else (math.exp(1 - r / c) if c > 0 else 0.0)
    out = {}
    for n in range(1, max_n + 1):
        ps = prec[:n]
        score = 0.0 if min(ps) == 0 else bp * math.exp(sum(math.log(p) for p in ps) / n)
        out[f"bleu{n}"] = 100.0 * score
    out.update({"precisions": [100.0 * p for p in prec], "bp": bp, "hyp_len": c, "ref_len": r})
    return out


def sentence_bleu(hypothesis, references, max_n=4) -> float:
    """BLEU-max_n of one hypothesis with add-one smoothing of the n>1 precisions (Lin & Och 2004), for
    ranking single captions on the HTML page; corpus figures always use `corpus_bleu`."""
    matched, total, c, r = corpus_stats([hypothesis], [references], max_n)
    if c == 0 or matched[0] == 0:
        return 0.0
    logs = [math.log(matched[0] / total[0])]
    logs += [math.log((m + 1) / (t + 1)) for m, t in zip(matched[1:], total[1:])]
    bp = 1.0 if c > r else math.exp(1 - r / c)
    return 100.0 * bp * math.exp(sum(logs) / max_n)
