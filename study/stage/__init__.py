"""The stage process (`python -m study.stage`): its session (data, model, toggles, optimizer), the passes
it runs (timing, sanity, the auto sweeps) and FLOPs. Started by the parent, one pass per process."""
