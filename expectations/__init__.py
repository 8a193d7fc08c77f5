"""Great Expectations suites derived from the catalogue.

- `suites`: which expectations a resource has, at which severity and threshold, for an
  extract and for a publication. Pure: no Great Expectations import, so it is cheap to
  build, test and print.
- `custom`: the custom expectations (catalogue row rules and the GB 11643 / GB 32100
  check characters), computed as engine column expressions.
- `runner`: runs a suite on a Spark Connect DataFrame with Great Expectations and returns
  one result per expectation; builds the Data Docs.

Great Expectations takes seconds to import: only `runner` and `custom` import it, and only
when a suite actually runs.
"""
