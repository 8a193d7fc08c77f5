"""The sharing service: consumers and their tokens, grants by sharing type, access and
verification requests, suspensions, the audit journal and the Delta Sharing server."""
