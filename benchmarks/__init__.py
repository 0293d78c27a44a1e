"""The project's benchmarks, run as modules from the repository root
(``python -m benchmarks.step_cost``, ``python -m benchmarks.quality``): step cost, head
cost, the quality protocols and the GPU scripts. They import the library's public API and
named submodules only; the library never imports them (``.importlinter``)."""
