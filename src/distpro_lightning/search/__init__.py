"""`ProcessSearchCallback` (hooks, state and files) over its engine: the trainer-free
`SearchStep`, its settings, the hypergradient, the held-out stream, diagnostics, the update
guard, checks, output paths and reporting."""
