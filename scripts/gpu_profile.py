"""Where a training step's time goes: cProfile over warm steps of the bench models.

    python scripts/gpu_profile.py --device cuda --models lenet5,lstm,resnet20 [--steps 20]

Prints, per model, the wall time per step and the functions with the most own
time (on a GPU, time spent waiting for the device shows up in the function that
synchronises). Counts CuPy kernel launches per step when CuPy is the backend.
"""
import argparse
import cProfile
import io
import pstats
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--models", default="lenet5,lstm,resnet20")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    from gpudl.bench_models import cases
    for case in cases(args.device, None, args.models.split(",")):
        step, sync = case["ours"], case["ours_sync"]
        for _ in range(3):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        dt = (time.perf_counter() - t0) / args.steps
        if args.device.startswith("cuda"):   # host time vs device time per step
            from cupyx.profiler import benchmark
            print(benchmark(step, n_repeat=args.steps, n_warmup=2, name=case["name"]))
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.steps):
            step()
        sync()
        prof.disable()
        s = io.StringIO()
        st = pstats.Stats(prof, stream=s)
        st.sort_stats("tottime").print_stats(args.top)
        calls = sum(v[1] for v in st.stats.values()) / args.steps
        print(f"\n######## {case['name']}: {dt * 1e3:.2f} ms/step, {calls:.0f} Python calls/step")
        lines = s.getvalue().splitlines()
        start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        print("\n".join(lines[start:]))


if __name__ == "__main__":
    main()
