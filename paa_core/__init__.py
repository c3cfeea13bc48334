"""paa_core: Probabilistic Anchor Assignment (PAA) object detection."""
