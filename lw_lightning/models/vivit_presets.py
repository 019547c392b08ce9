"""ViViT sizes by name, in a module without torch: the config layer (``smoke=true``) reads them
before torch is imported; :mod:`.vivit` and :mod:`.video_lookwhere` build models from them."""

from __future__ import annotations

#: Named sizes. ``tiny`` is for tests and the CPU demo (trained from scratch).
PRESETS: dict[str, dict] = {
    "tiny": dict(img_size=32, num_frames=8, tubelet=[2, 8, 8], embed_dim=64, depth=4, num_heads=4, temporal_depth=1),
    "base": dict(img_size=224, num_frames=32, tubelet=[2, 16, 16], embed_dim=768, depth=12, num_heads=12, temporal_depth=4),
    "large": dict(img_size=224, num_frames=32, tubelet=[2, 16, 16], embed_dim=1024, depth=24, num_heads=16, temporal_depth=4),
}
