"""Stage 3, VERIFY: pure reward functions over token ids (``rewards``) and the verifier actor pool."""
