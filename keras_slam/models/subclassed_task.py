"""`SubclassedTask`: a keras-hub `Task` whose forward pass is its own `call`.

keras-hub's `PipelineModel.__init__` resets the class attribute
`PipelineModel.__bases__` to `(keras.Model,)` (its workaround for keras issue
17270), and building any functional Task (`SpeechRecognizer`, a keras-hub
`CausalLM`) injects `Functional` there again. The hierarchy is shared by
every Task, so with plain `keras_hub.models.Task`:
- building a subclassed Task strips `Functional` from every functional Task
  built before it: their `predict` then raises "Model SpeechRecognizer does
  not have a `call()` method implemented";
- building a functional Task afterwards gives the subclassed one
  `Functional`'s graph members (`call` of a model without `_inputs`).
`SubclassedTask` restores the bases after its own construction and pins, on
itself, the non-functional version of every member `Functional` overrides;
`summary` lists its layers as a subclassed model's whatever the bases are
(keras' summary asks `isinstance(model, Functional)`).
"""

import keras
import keras_hub

from keras_slam.utils.keras_private import Functional, PipelineModel

_NOT_PINNED = {"__init__", "__new__", "__module__", "__doc__", "__dict__", "__weakref__"}


def functional_overrides():
    """Names `Functional` (or its base `Function`) defines over `keras.Model`'s."""
    graph_classes = Functional.__mro__[: Functional.__mro__.index(keras.Model)]
    names = set().union(*(vars(cls) for cls in graph_classes))
    return sorted(name for name in names - _NOT_PINNED if hasattr(keras.Model, name))


def _non_functional_member(name):
    for cls in (keras_hub.models.Task, PipelineModel):
        if name in vars(cls):
            return vars(cls)[name]
    return getattr(keras.Model, name)


class SubclassedTask(keras_hub.models.Task):
    """Base of keras-slam's Tasks that are not functional models (see module)."""

    def __init__(self, *args, **kwargs):
        bases = PipelineModel.__bases__
        super().__init__(*args, **kwargs)
        PipelineModel.__bases__ = bases

    def summary(self, *args, **kwargs):
        """keras-hub's summary, with this model's class seen without `Functional`."""
        bases = PipelineModel.__bases__
        PipelineModel.__bases__ = (keras.Model,)
        try:
            super().summary(*args, **kwargs)
        finally:
            PipelineModel.__bases__ = bases


for _name in functional_overrides():
    setattr(SubclassedTask, _name, _non_functional_member(_name))
