"""Prints what the running Ray cluster holds as `{"nodes": N, "gpus": G}`: the head's default cluster
view (soundmind.train.cluster). A separate process, so the head's own process never holds a Ray
driver connection while verl's driver runs.

It connects to the cluster this machine's `ray start` recorded (or RAY_ADDRESS's), and fails when
there is none: a bare `ray.init()` would start a new one-node cluster and count that."""

import json

import ray


def main() -> None:
    ray.init(address="auto", logging_level="ERROR", log_to_driver=False)
    try:
        alive = [node for node in ray.nodes() if node.get("Alive")]
        gpus = sum(node.get("Resources", {}).get("GPU", 0) for node in alive)
        print(json.dumps({"nodes": len(alive), "gpus": gpus}))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
