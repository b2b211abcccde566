"""The Shapes world's failure-search surrogate and prompt families (registered in plugin.py).

The surrogate is the factor judge (backends/shapes/judge.py), which reads rendered scenes at 100%:
- single-object families: the scene net's probabilities; agreement = the lowest probability of an
  asked value; failed = the judged shape or colour is not the asked one (the protocol of
  eval_generator's shape+colour score); features = the probabilities of every factor plus the asked
  shape and colour (one-hot), so failures cluster by what was asked and what was drawn; "drawn" adds
  the geometric scorer's reading of the outline where it differs from the judge's ("green triangle
  (outline reads square)"): the judge misreads some bent-sided squares and calls four-pointed stars
  stars, so a person sees where its verdict is doubtful;
- two-object families: the two largest foreground components (pixels far from the border colour),
  each read by the object net; agreement = for the worse-served asked object, the best
  p(shape) * p(colour) among the detected objects; failed = an asked object is not among them.

``log_agreement`` is the differentiable score of the gradient searches (the judge's log-probability
of what was asked, i.e. minus its cross-entropy): single objects, the sum of log p(asked shape) and
log p(asked colour) from the scene net; two objects, per asked object a soft maximum (logsumexp) over
the detected objects of log p(shape) + log p(colour), summed (the objects are found on the detached
image, the crops around them stay differentiable).
"""
from __future__ import annotations

import numpy as np

from backends.generative.failure_search import PromptFamily, Scores
from backends.shapes import scenes as S

COLOURS = tuple(S.COLOURS)


def _slots(words: dict, n: int | None = None) -> dict[str, list[str]]:
    return {k: list(v[:n]) for k, v in words.items()}


def families() -> dict[str, PromptFamily]:
    """The Shapes prompt families: canonical words, their paraphrases (synonyms as the captions use
    them), and two objects."""
    canon = {"colour": _slots(S.COLOUR_WORDS, 1), "shape": _slots(S.SHAPE_WORDS, 1)}
    para = {"colour": _slots(S.COLOUR_WORDS), "shape": _slots(S.SHAPE_WORDS)}
    two = {**canon, "colour2": canon["colour"], "shape2": canon["shape"]}
    return {f.name: f for f in (
        PromptFamily("a {colour} {shape}", canon,
                     templates=("a {colour} {shape}", "{colour} {shape}", "a {shape} in {colour}",
                                "a {shape}, coloured {colour}", "one {colour} {shape}")),
        PromptFamily("paraphrase: a {colour} {shape}", para,
                     templates=("a {colour} {shape}", "{colour} {shape}", "a {shape} in {colour}",
                                "a {shape}, coloured {colour}")),
        PromptFamily("a {colour} {shape} and a {colour2} {shape2}", two, distinct=(("shape", "shape2"),),
                     templates=("a {colour} {shape} and a {colour2} {shape2}",
                                "a {colour2} {shape2} and a {colour} {shape}",
                                "{colour} {shape}, {colour2} {shape2}")),
    )}


class JudgeSurrogate:
    """The factor judge as the failure search's surrogate (see the module's docstring)."""

    def __init__(self, judge):
        self.judge = judge

    @staticmethod
    def families() -> dict[str, PromptFamily]:
        return families()

    def score(self, images, asked: list[dict]) -> Scores:
        images = np.asarray(images)
        if asked and "shape2" in asked[0]:
            return self._two(images, asked)
        from backends.shapes.geometric_scorer import classify_shapes

        p = self.judge.predict_proba(images)
        lab = self.judge.labels
        outline = classify_shapes(images)  # a second opinion on the shape, shown where it differs
        agree, failed, drawn, feats = [], [], [], []
        for i, a in enumerate(asked):
            keys = [k for k in ("shape", "colour", "size", "position") if k in a]
            agree.append(min(float(p[k][i, lab[k].index(a[k])]) for k in keys))
            read = {k: lab[k][int(p[k][i].argmax())] for k in p}
            failed.append(any(read[k] != a[k] for k in keys))
            note = f" (outline reads {outline[i]})" if outline[i] not in (read["shape"], "none") else ""
            drawn.append(f"{read['colour']} {read['shape']}{note}")
            onehot = [np.eye(len(lab[k]))[lab[k].index(a[k])] for k in ("shape", "colour")]
            feats.append(np.concatenate([p[k][i] for k in ("shape", "colour", "size", "position")] + onehot))
        return Scores(np.asarray(agree), drawn, np.asarray(failed), np.asarray(feats, np.float32))

    def log_agreement(self, images, asked: list[dict]):
        """Differentiable: images float tensor (N, 3, H, W) in [0, 1] -> (N,) log-probability of what was
        asked (see the module's docstring); the gradient searches lower it."""
        import torch

        lab = self.judge.labels
        if asked and "shape2" in asked[0]:
            return torch.stack([self._two_log(images[i:i + 1], a) for i, a in enumerate(asked)])
        lg = self.judge.scene_logits(images)
        out = images.new_zeros(len(asked))
        for k in ("shape", "colour", "size", "position"):
            rows = [i for i, a in enumerate(asked) if k in a]
            if rows:
                logp = torch.log_softmax(lg[k].float(), -1)
                out = out.index_add(0, torch.tensor(rows), logp[rows, [lab[k].index(asked[i][k]) for i in rows]])
        return out

    def _two_log(self, image, a: dict):
        import torch

        from backends.shapes.judge import mask_centres

        lab = self.judge.labels
        u8 = (image[0].detach().permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        objs = _objects(u8)
        cen = mask_centres(np.stack(objs))[0] if objs else np.full((1, 2), 0.5, np.float32)
        lg = self.judge.object_logits(image.expand(len(cen), -1, -1, -1), cen, grad=True)
        ls, lc = torch.log_softmax(lg["shape"].float(), -1), torch.log_softmax(lg["colour"].float(), -1)
        per = [torch.logsumexp(ls[:, lab["shape"].index(sh)] + lc[:, lab["colour"].index(co)], 0)
               for sh, co in ((a["shape"], a["colour"]), (a["shape2"], a["colour2"]))]
        return per[0] + per[1]

    def _two(self, images, asked) -> Scores:
        lab = self.judge.labels
        agree, failed, drawn, feats = [], [], [], []
        for im, a in zip(images, asked):
            objs = _objects(im)
            want = [(a["shape"], a["colour"]), (a["shape2"], a["colour2"])]
            if objs:
                from backends.shapes.judge import mask_centres

                cen, _ = mask_centres(np.stack(objs))
                lg = self.judge.object_logits(np.repeat(im[None], len(objs), 0), cen)
                ps, pc = lg["shape"].softmax(-1).numpy(), lg["colour"].softmax(-1).numpy()
                got = [(lab["shape"][int(s.argmax())], lab["colour"][int(c.argmax())]) for s, c in zip(ps, pc)]
                best = [max(float(ps[j, lab["shape"].index(sh)] * pc[j, lab["colour"].index(co)])
                            for j in range(len(objs))) for sh, co in want]
            else:
                ps, pc, got, best = np.zeros((0, 5)), np.zeros((0, 8)), [], [0.0, 0.0]
            agree.append(min(best))
            failed.append(any(w not in got for w in want))
            drawn.append(" and ".join(f"{co} {sh}" for sh, co in got) or "nothing")
            f = np.zeros(2 * (5 + 8), np.float32)  # the two largest objects' shape and colour probabilities
            for j in range(min(2, len(got))):
                f[j * 13: j * 13 + 5], f[j * 13 + 5: (j + 1) * 13] = ps[j], pc[j]
            feats.append(f)
        return Scores(np.asarray(agree), drawn, np.asarray(failed), np.stack(feats))


def _objects(image: np.ndarray, max_objects: int = 2, min_pixels: int = 6) -> list[np.ndarray]:
    """The largest foreground components (bool (H, W) each), largest first."""
    from scipy import ndimage

    from backends.shapes.eval_generator import foreground

    lab, n = ndimage.label(foreground(image))
    sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1)) if n else []
    order = [int(c) + 1 for c in np.argsort(-np.asarray(sizes)) if sizes[c] >= min_pixels]
    return [lab == c for c in order[:max_objects]]


def load_surrogate():
    """The judge as a surrogate, or None when its weights are missing."""
    from backends.shapes.judge import WEIGHTS, load_judge

    if not WEIGHTS.exists():
        return None
    return JudgeSurrogate(load_judge())
