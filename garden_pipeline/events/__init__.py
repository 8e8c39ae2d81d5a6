"""The real-time path: pushed Model Garden events, their validation, the inbox and the receiver."""
