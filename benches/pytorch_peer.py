#!/usr/bin/env python3
"""Times the peers of rmac-native on VGG16 conv1_1…pool5 (+ an R-MAC-sized
head is negligible and left out): PyTorch (torchvision VGG16 `.features`,
weights=None, channels_last, torch.no_grad, oneDNN) and ONNX Runtime (the same
13 conv + ReLU + 5 max-pool graph, built with onnx.helper, random weights),
optionally Keras 3 on TensorFlow. One line per peer:

    peer <name> <best ms> <images/s>

Run through benches/peers.sh, which installs the pinned versions into a venv
outside the repository.
"""
import argparse
import os
import time

import numpy as np

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def best_of(fn, repeat):
    fn()  # warm-up (oneDNN primitive creation, ORT graph optimisation)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def torch_peer(h, w, threads, repeat):
    import torch
    import torchvision

    torch.set_num_threads(threads)
    model = torchvision.models.vgg16(weights=None).features.eval().to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, h, w).to(memory_format=torch.channels_last)
    with torch.no_grad():
        s = best_of(lambda: model(x), repeat)
    return f"pytorch-{torch.__version__}", s


def torch_cuda_peer(h, w, _threads, repeat, tf32=False):
    """The same network on an NVIDIA GPU (benches/gpu-check.sh runs it where the
    GPU box's python3 has CUDA PyTorch). fp32 convolutions (TF32 off, as the
    WGSL shaders compute) unless tf32; cuDNN autotuning on; input already on
    the GPU, timed to synchronisation (compare with the shaders' conv time)."""
    import torch
    import torchvision

    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    dev = torch.device("cuda")
    model = torchvision.models.vgg16(weights=None).features.eval().to(dev, memory_format=torch.channels_last)
    x = torch.randn(1, 3, h, w, device=dev).to(memory_format=torch.channels_last)

    def step():
        model(x)
        torch.cuda.synchronize()

    with torch.no_grad():
        for _ in range(3):
            step()  # cuDNN algorithm search
        s = best_of(step, max(repeat, 10))
    name = "pytorch-cuda-tf32" if tf32 else "pytorch-cuda-fp32"
    return f"{name}-{torch.__version__}-{torch.cuda.get_device_name(0).replace(' ', '_')}", s


def torch_cuda_tf32_peer(h, w, threads, repeat):
    return torch_cuda_peer(h, w, threads, repeat, tf32=True)


def onnx_model(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, cur, cin = [], [], "x", 3
    for i, v in enumerate(CFG):
        if v == "M":
            nodes.append(helper.make_node("MaxPool", [cur], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            cur = f"p{i}"
            continue
        wname, bname = f"w{i}", f"b{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal((v, cin, 3, 3)) * (2 / (9 * cin)) ** 0.5).astype(np.float32), wname))
        inits.append(numpy_helper.from_array(np.zeros(v, np.float32), bname))
        nodes.append(helper.make_node("Conv", [cur, wname, bname], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        cur, cin = f"r{i}", v
    graph = helper.make_graph(
        nodes, "vgg16_features",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)


def ort_peer(h, w, threads, repeat):
    import onnxruntime as ort

    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "rmac_native_vgg16_features.onnx")
    if not os.path.exists(path):
        onnx_model(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, h, w)).astype(np.float32)
    s = best_of(lambda: sess.run(None, {"x": x}), repeat)
    return f"onnxruntime-{ort.__version__}", s


def tf_peer(h, w, threads, repeat):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    model = tf.keras.applications.VGG16(weights=None, include_top=False, input_shape=(h, w, 3))
    x = tf.random.normal((1, h, w, 3))
    f = tf.function(lambda t: model(t, training=False))
    s = best_of(lambda: f(x).numpy(), repeat)
    return f"keras-tensorflow-{tf.__version__}", s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--height", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tf", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated: torch,ort,tf")
    ap.add_argument("--cuda", action="store_true", help="time PyTorch on the GPU instead (fp32 and TF32)")
    a = ap.parse_args()
    peers = [torch_peer, ort_peer] + ([tf_peer] if a.tf else [])
    if a.only:
        want = set(a.only.split(","))
        peers = [p for p in peers if p.__name__.split("_")[0] in want]
    if a.cuda:
        peers = [torch_cuda_peer, torch_cuda_tf32_peer]
    print(f"# VGG16 conv1_1…pool5, {a.width}×{a.height}, {a.threads} threads, best of {a.repeat}")
    for peer in peers:
        name, s = peer(a.height, a.width, a.threads, a.repeat)
        print(f"peer {name} {s * 1e3:.1f} {1 / s:.3f}", flush=True)


if __name__ == "__main__":
    main()
