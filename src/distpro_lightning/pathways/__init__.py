"""Distillation pathways: feature taps, pathway specs and their transform heads (paper
Fig. 4, fused per connection), and ReviewKD's review fusion as one pathway."""
