"""Process-level runtime: precision, distributed training, the memory allocator."""
