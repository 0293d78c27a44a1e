"""The module side: the contract the search needs, the step context, the distillation
config, `DistProMixin`, `DistProModule`, the frozen teacher, the student's optimizer
settings, student export and the pathway summary."""
