#!/usr/bin/env python3
"""Converts a Keras Applications weights file (.h5) to the safetensors file `affectcam train
--arch vgg16 --init FILE` imports: every layer's weights as `{layer}.kernel` / `{layer}.bias`,
unchanged (Keras' HWIO kernel layout; affectcam converts the layout and folds VGG16's
input preprocessing into its first conv when it imports them).

    pip install h5py numpy safetensors
    python3 scripts/keras_h5_to_safetensors.py \\
        ~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 vgg16.safetensors

The .h5 is what `keras.applications.VGG16(weights="imagenet", include_top=False)` downloads
(its licence: the VGG weights are CC BY 4.0, Simonyan & Zisserman). Reads both a weights-only
file and a whole saved model (which nests the weights under `model_weights`).
"""
import os
import sys

import h5py
import numpy as np
from safetensors.numpy import save_file


def text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def convert(src, dst):
    tensors = {}
    with h5py.File(src, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in map(text, root.attrs["layer_names"]):
            group = root[layer]
            for weight in map(text, group.attrs.get("weight_names", [])):
                kind = weight.split("/")[-1].split(":")[0]  # "block1_conv1/kernel:0" -> kernel
                tensors[f"{layer}.{kind}"] = np.ascontiguousarray(group[weight], dtype=np.float32)
    if not tensors:
        sys.exit(f"{src}: no layer weights found (not a Keras weights file?)")
    save_file(tensors, dst, metadata={"source": os.path.basename(src), "layout": "keras"})
    print(f"wrote {len(tensors)} tensors to {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: keras_h5_to_safetensors.py WEIGHTS.h5 OUT.safetensors")
    convert(sys.argv[1], sys.argv[2])
