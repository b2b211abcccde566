"""Opening a vectors file does not load torch (issue #21: any --data file loaded the image encoder)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_npy_upload_does_not_import_torch(tmp_path):
    import numpy as np

    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32))
    code = (
        "import sys; from backends.registry import Backends; from backends.settings import Settings;"
        f"b = Backends(Settings.from_env(cache_dir={str(tmp_path / 'c')!r}));"
        f"k = b.add_path({str(tmp_path / 'v.npy')!r}); b.neighbours(k, 0, 3);"
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == "False"


def test_an_image_upload_still_uses_the_image_encoder(tmp_path):
    import zipfile

    import numpy as np
    from PIL import Image

    from backends.registry import Backends
    from backends.settings import Settings

    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for i in range(4):
            p = tmp_path / f"{i}.png"
            Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(p)
            z.write(p, p.name)
    b = Backends(Settings.from_env(cache_dir=str(tmp_path / "c")))
    c = b.corpus(b.add_path(str(tmp_path / "imgs.zip")))
    assert "image encoder shapes-cnn" in c.description and c.text_query is not None
