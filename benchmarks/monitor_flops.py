"""XLA's FLOPs of the pretraining step with and without the online probe and the GenSCL diagnostics, from the
compiled programs alone (nothing runs), for shapes too slow to time on a CPU. Takes the step flags of
`python -m genscl_jax.bench` and prints {"on", "off", "ratio"} as JSON (BENCHMARKS.md section 10):

    python benchmarks/monitor_flops.py --model resnet50 --stem cifar --image-size 32 --per-device-batch 256 \
        --num-classes 100
"""

import argparse
import json
import sys

from genscl_jax.tools import bench, measure, step_bench


def main(argv: list[str]) -> dict[str, float]:
    args = bench.parse_args(argv)
    flops = {}
    for monitor in (True, False):
        benchmark = step_bench.StepBenchmark(argparse.Namespace(**{**vars(args), "monitor": monitor}))
        compiled, _ = benchmark.compile(
            benchmark.training_compiler_options(measure.parse_compiler_options(args.compiler_option)))
        flops["on" if monitor else "off"] = measure.compiled_flops(compiled)
    return {**flops, "ratio": flops["on"] / flops["off"]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
