"""The ground floor: torch-free types the parent and the stage process share.

RunConfig and its checks, errors, the stage Plan and StageSpec, records (results.jsonl, the seed
CSV), statistics, the machine (Env, host info, foreign load), references to user code, the one way a
child process starts, and what a failed pass says. Nothing here imports torch or a higher layer.
"""
