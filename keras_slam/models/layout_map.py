"""`keras.distribution` layout maps of every SLAM model (keras-hub style).

`get_layout_map(device_mesh)` on `SLAMBackbone`, `SpeechEncoder` and the
tasks returns one `keras.distribution.LayoutMap` whose rules (full-match
regexes over variable paths) cover every Conformer, front-end, embedding,
quantizer, head and translation-decoder weight. Megatron-style pairs keep one collective per
pair: the first dense of a pair is split on its output features over the
model axis (column parallel), the second on its input features (row
parallel); the other kernel axis is split over the data axis (ZeRO-3 style,
as keras-hub's Gemma does). Vocabulary- and code-sized axes, whose size is
the user's, stay whole; small position and quantizer tables are replicated
explicitly (a rule of all `None`). A weight that no rule names is
replicated; `tests/models/test_layout_map.py` checks that no weight of
rank >= 2 is left to that default.

    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    layout_map = SLAMBackbone.get_layout_map(mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
"""

import keras


def layout_rules(model="model", data="batch"):
    """{variable path regex: axis names per weight axis} of every SLAM weight."""
    column = (data, model)  # (in, out): out features over the model axis
    row = (model, data)  # (in, out): in features over the model axis
    return {
        # Conformer feed-forward and convolution modules.
        ".*/intermediate_dense/kernel": column,
        ".*/intermediate_dense/bias": (model,),
        ".*/output_dense/kernel": row,  # ffn and attention output
        ".*/pointwise_conv1/kernel": column,
        ".*/pointwise_conv1/bias": (model,),
        ".*/pointwise_conv2/kernel": row,
        ".*/depthwise_kernel": (None, model),
        # Attention: heads' features over the model axis.
        ".*/(query|key|value)_dense/kernel": column,
        ".*/(query|key|value)_dense/bias": (model,),
        ".*/position_dense/kernel": column,
        ".*/pos_bias_(u|v)": (None, None),
        ".*/distance_embedding": (None, None),
        # SpeechTranslator decoder (keras-hub TransformerDecoder blocks):
        # attention kernels (D, heads, head_dim) / (heads, head_dim, D).
        "decoder_layer_\\d+/(self|cross)_attention/(query|key|value)/kernel": (data, model, None),
        "decoder_layer_\\d+/(self|cross)_attention/(query|key|value)/bias": (model, None),
        "decoder_layer_\\d+/(self|cross)_attention/attention_output/kernel": (model, None, data),
        "decoder_layer_\\d+/feedforward_intermediate_dense/kernel": column,
        "decoder_layer_\\d+/feedforward_intermediate_dense/bias": (model,),
        "decoder_layer_\\d+/feedforward_output_dense/kernel": row,
        "decoder_encoder_projection/kernel": column,
        "decoder_embedding/position_embedding/embeddings": (None, None),
        # Speech front end and tower output.
        ".*/subsampling/conv_\\d+/kernel": (None, None, None, model),
        ".*/subsampling/conv_\\d+/bias": (model,),
        ".*/subsampling/projection/kernel": (None, model),
        ".*/output_projection/kernel": column,
        # Text and decoder embeddings (vocabulary, D); tied with the MLM /
        # decoder output.
        "(decoder_embedding/)?token_embedding/embeddings": (None, model),
        # Quantizer and task heads (D or features, vocabulary or codes).
        "quantizer/codevectors": (None, None, None),
        "quantizer/logits_projection/kernel": (None, None),
        # The pre-trainer's running code counts (1, codes) behind w2v_mlm_gain.
        ".*/running_code_counts": (None, None),
        "(contrastive_projection|.*_head)/kernel": (model, None),
        "classification_head/logits/kernel": (model, None),
    }


def get_layout_map(device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"):
    """`keras.distribution.LayoutMap` of every SLAM weight over `device_mesh`.

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with both axes.
        model_parallel_dim_name: the mesh axis that splits features.
        data_parallel_dim_name: the mesh axis that splits the batch (and
            the other axis of each kernel).
    """
    names = set(device_mesh.axis_names)
    for name in (model_parallel_dim_name, data_parallel_dim_name):
        if name not in names:
            raise ValueError(f"device mesh axes {device_mesh.axis_names} have no axis {name!r}")
    layout_map = keras.distribution.LayoutMap(device_mesh)
    rules = layout_rules(model_parallel_dim_name, data_parallel_dim_name)
    for pattern, axes in rules.items():
        layout_map[pattern] = axes
    return layout_map


class LayoutMapMixin:
    """`get_layout_map` for a SLAM backbone or task (see module docstring)."""

    @classmethod
    def get_layout_map(
        cls, device_mesh, model_parallel_dim_name="model", data_parallel_dim_name="batch"
    ):
        """See `keras_slam.models.layout_map.get_layout_map`."""
        return get_layout_map(device_mesh, model_parallel_dim_name, data_parallel_dim_name)
