"""Procedural Shapes scenes per second, 32 and 64 px, one core (a speed measure, not a test)."""
import time

from common import Timer  # noqa: F401  (sets sys.path)

from backends.shapes import scenes


def main():
    scenes.make_batch(10, seed=0, size=32)
    for size in (32, 64):
        t = time.perf_counter()
        scenes.make_batch(1000, seed=1, size=size)
        print(f"{size} px: {1000 / (time.perf_counter() - t):,.0f} scenes/s")


if __name__ == "__main__":
    main()
