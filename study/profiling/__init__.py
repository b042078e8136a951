"""Profiling passes, one module each; every pass is its own short run after the timing pass.

A pass module exposes `run(sess) -> dict[str, str]`: profile kind → path (plus `<pass>_warning`
entries for what the report should show next to the paths). The one registry of passes is
`study.profiling.passes.PASSES`; the names users type are `study.core.config.PROFILE_PASSES`.
"""
