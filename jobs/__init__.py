"""Pipeline jobs: one module per stage, each `run(spark, *, resource, interval, settings)`.

Stages hand work to each other through the extract register (`ops.extracts.status`):
landing → `bronze` → `validated` → `merged` → `published`. Each stage picks up what the
previous left, so any stage can be re-run or resumed after a failure and changes nothing
the second time.
"""
