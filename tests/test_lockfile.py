"""requirements.lock pins, with hashes, every package the requirement files name, at their pins."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, tuple[str, int]]:
    text = REPO.joinpath("requirements.lock").read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9_.\-\[\]]+)==([^\s\\]+)", block)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1).lower())] = (m.group(2), block.count("--hash=sha256:"))
    return out


def test_every_requirement_is_locked_with_hashes_at_its_pin():
    lock = _lock()
    assert len(lock) > 50
    assert all(n >= 1 for _, n in lock.values()), [k for k, (_, n) in lock.items() if n == 0]
    for f in ("requirements.txt", "requirements-test.txt"):
        for line in REPO.joinpath(f).read_text().splitlines():
            line = line.split("#")[0].strip()
            if not line or line.startswith("-r"):
                continue
            name = re.sub(r"[-_.]+", "-", re.split(r"[=<>!~\[ ]", line)[0].lower())
            assert name in lock, f"{f}: {name} is not in requirements.lock"
            if "==" in line:
                assert lock[name][0] == line.split("==")[1].strip(), f"{name}: {line} vs lock {lock[name][0]}"
