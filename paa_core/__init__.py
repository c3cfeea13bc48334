"""paa_core: Probabilistic Anchor Assignment (PAA) object detection."""

# The compiled ops in paa_core._C link against torch's libraries: load them first.
import torch  # noqa: F401
