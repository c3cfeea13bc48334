"""Name -> builder registries, so configs can pick implementations by string."""


class Registry(dict):
    """A dict whose `register` works as a decorator and whose missing keys fail clearly.

    BACKBONES = Registry("BACKBONES")

    @BACKBONES.register("R-50-FPN-RETINANET")
    def build(cfg): ...
    """

    def __init__(self, name, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.name = name

    def register(self, key, obj=None):
        if obj is not None:
            self._add(key, obj)
            return obj

        def decorator(fn):
            self._add(key, fn)
            return fn

        return decorator

    def _add(self, key, obj):
        if key in self:
            raise KeyError(f"{self.name}: '{key}' is already registered")
        self[key] = obj

    def __missing__(self, key):
        raise KeyError(f"{self.name}: unknown name '{key}'; known names: {', '.join(sorted(self))}")


BACKBONES = Registry("BACKBONES")
RPN_HEADS = Registry("RPN_HEADS")
ROI_BOX_FEATURE_EXTRACTORS = Registry("ROI_BOX_FEATURE_EXTRACTORS")
ROI_BOX_PREDICTOR = Registry("ROI_BOX_PREDICTOR")
