"""The item side of the service: bundle verification and loading, the user encoder, the
retriever and its search plans, and the filter bitmaps."""
