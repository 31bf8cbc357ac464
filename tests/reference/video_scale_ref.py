"""The reference for tests/video_scale.rs: full-size RGB frames decoded by the ffmpeg CLI
(accurate rounding, interpolated chroma, the colour matrix named explicitly), each downscaled
by PIL's box filter to the working size, compared with dino-stream's frames.

Prints, per frame, the mean absolute difference from its own reference, the smallest from any
other frame's reference, and that of the CLI's own area downscale (`scale=W:H:flags=area`, what
FFmpeg's scaler gave dino-stream before the planes path) from the same reference."""
import sys

import numpy as np
from PIL import Image

full_path, ours_path, area_path = sys.argv[1:4]
w, h, dw, dh = (int(v) for v in sys.argv[4:8])
full = np.fromfile(full_path, np.uint8).reshape(-1, h, w, 3)
ours = np.fromfile(ours_path, np.uint8).reshape(-1, dh, dw, 3).astype(np.int32)
area = np.fromfile(area_path, np.uint8).reshape(-1, dh, dw, 3).astype(np.int32)
assert len(full) == len(ours) == len(area), (len(full), len(ours), len(area))
refs = np.stack(
    [np.asarray(Image.fromarray(f).resize((dw, dh), Image.Resampling.BOX)) for f in full]
).astype(np.int32)
for i, o in enumerate(ours):
    own = float(np.abs(o - refs[i]).mean())
    other = min(float(np.abs(o - r).mean()) for j, r in enumerate(refs) if j != i)
    cli = float(np.abs(area[i] - refs[i]).mean())
    print(f"frame {i} own {own:.4f} other {other:.4f} cli_area {cli:.4f}")
