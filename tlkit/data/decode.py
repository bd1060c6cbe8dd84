"""The one image-decoding rule, shared by training, `tlkit predict` and the SavedModel's `serve_bytes`.

    tf_decodes(head)            # Python: does TensorFlow decode these bytes? (the first HEAD_BYTES suffice)
    tf_decodes_tensor(contents) # the same rule in TensorFlow ops (tf.data, SavedModel signatures)
    decode_rgb_tf(contents)     # TensorFlow ops: encoded bytes -> uint8 (or float32) RGB [H, W, 3]
    decode_rgb_pillow(source)   # Pillow: a path or encoded bytes -> uint8 RGB [H, W, 3]
    pil_to_rgb(image)           # an open Pillow image (any mode) -> uint8 RGB [H, W, 3]

Which decoder: TensorFlow decodes JPEG, PNG, GIF and uncompressed 24/32-bit BMP (recognised
by their first bytes, whatever the file name); everything else Pillow reads (WebP, palette
or compressed BMP, TIFF, ICO, ...) goes to Pillow. TensorFlow gets WebP with alpha wrong and
reads palette BMPs' indices as grey levels, hence the rule.

What both decoders give: 8-bit RGB, the first frame of an animation, EXIF orientation not
applied (TensorFlow ignores it), and

  * transparency composited over white (`ALPHA_BACKGROUND`): RGBA, LA (and their 16-bit
    forms), palette images with transparent entries. Integer arithmetic, the same in both
    decoders: out = (c * a + 255 * (255 - a) + 127) // 255, i.e. c*a/255 + 255*(1 - a/255)
    rounded to the nearest integer (never a tie);
  * grayscale replicated to the three channels;
  * 16-bit scaled to 8 bits by the high byte (v >> 8), as TensorFlow's decoders do, not clipped;
  * CMYK, YCbCr, palette and 1-bit converted to RGB.

Not transparency, on purpose or by TensorFlow's limits (the same in training and serving):
a single transparent colour in a grey or RGB PNG (a tRNS colour key, not an alpha channel)
is ignored, as TensorFlow's PNG decoder ignores it; transparent pixels of a GIF's first
frame come out black (TensorFlow's GIF decoder gives no alpha); 32-bit BMPs' fourth byte is
not read as alpha (neither decoder does).

No TensorFlow import at module level: tlkit.data.prescan (pure Python + Pillow, run before
TensorFlow starts) uses `tf_decodes`.
"""
from __future__ import annotations

import io
import os
import struct
import warnings
from typing import Union

import numpy as np

HEAD_BYTES = 64  # enough for every signature tf_decodes() reads
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white
NOT_TF_MESSAGE = ("not JPEG, PNG, GIF or uncompressed 24/32-bit BMP data (the formats TensorFlow decodes "
                  "as tlkit's training pipeline does)")

_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


# --------------------------------------------------------------------------- the rule


def tf_decodes(head: bytes) -> bool:
    """True when TensorFlow decodes these bytes (the first HEAD_BYTES suffice): JPEG, PNG, GIF,
    uncompressed (BI_RGB) 24/32-bit BMP. Everything else is decoded with Pillow."""
    if head[:3] == b"\xff\xd8\xff" or head[:4] in (b"\x89PNG", b"GIF8"):
        return True
    if head[:2] == b"BM" and len(head) >= 34:
        bits, compression = struct.unpack("<HI", head[28:34])
        return bits in (24, 32) and compression == 0
    return False


def _signatures(contents):
    """(is_png, tf_decodes) as boolean scalar tensors."""
    import tensorflow as tf

    head = tf.strings.join([tf.strings.substr(contents, 0, HEAD_BYTES), tf.constant(b"\x00" * HEAD_BYTES)])

    def starts(position: int, signature: bytes):
        return tf.equal(tf.strings.substr(head, position, len(signature)), signature)

    is_png = starts(0, b"\x89PNG")
    bmp = tf.reduce_all([starts(0, b"BM"), starts(30, b"\x00\x00\x00\x00"),  # BI_RGB: no compression
                         tf.logical_or(starts(28, b"\x18\x00"), starts(28, b"\x20\x00"))])  # 24 or 32 bits
    return is_png, tf.reduce_any([starts(0, b"\xff\xd8\xff"), is_png, starts(0, b"GIF8"), bmp])


def tf_decodes_tensor(contents):
    """`tf_decodes` in TensorFlow ops (eager or in a graph): a boolean scalar tensor."""
    return _signatures(contents)[1]


# --------------------------------------------------------------------------- TensorFlow


def decode_rgb_tf(contents, dtype: str = "uint8"):
    """Encoded bytes (a string scalar tensor) -> RGB [H, W, 3], uint8 or (dtype="float32") float32 0..255.

    TensorFlow ops, eager or in a graph (tf.data, SavedModel signatures). PNG is decoded with
    its own channels (channels=0) so that alpha is composited over ALPHA_BACKGROUND; JPEG, GIF
    and BMP with channels=3. Bytes that `tf_decodes` refuses fail with NOT_TF_MESSAGE.
    """
    import tensorflow as tf

    if tf.as_dtype(dtype) not in (tf.uint8, tf.float32):
        raise ValueError(f"decode_rgb_tf: dtype must be uint8 or float32, not {dtype!r}")
    is_png, readable = _signatures(contents)
    check = tf.debugging.Assert(readable, [NOT_TF_MESSAGE])
    with tf.control_dependencies([check]):
        image = tf.cond(
            is_png,
            lambda: tf.io.decode_image(contents, channels=0, dtype=tf.uint8, expand_animations=False),
            lambda: tf.io.decode_image(contents, channels=3, dtype=tf.uint8, expand_animations=False),
        )
    channels = tf.shape(image)[-1]

    def composite():
        rgb = tf.cast(tf.cond(channels < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3]),
                      tf.int32)
        alpha = tf.cast(image[..., -1:], tf.int32)
        background = tf.constant(ALPHA_BACKGROUND, dtype=tf.int32)
        return tf.cast((rgb * alpha + background * (255 - alpha) + 127) // 255, tf.uint8)

    def opaque():
        return tf.cond(channels < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])

    has_alpha = tf.logical_or(tf.equal(channels, 2), tf.equal(channels, 4))
    rgb = tf.cond(has_alpha, composite, opaque)
    rgb.set_shape([None, None, 3])
    return rgb if tf.as_dtype(dtype) == tf.uint8 else tf.cast(rgb, tf.float32)


# --------------------------------------------------------------------------- Pillow


def composite_over_background(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA [H, W, 4] -> uint8 RGB [H, W, 3] over ALPHA_BACKGROUND (decode_rgb_tf's arithmetic)."""
    rgba = np.asarray(rgba, dtype=np.int64)
    alpha = rgba[..., 3:]
    background = np.asarray(ALPHA_BACKGROUND, dtype=np.int64)
    return ((rgba[..., :3] * alpha + background * (255 - alpha) + 127) // 255).astype(np.uint8)


def pil_to_rgb(image) -> np.ndarray:
    """An open Pillow image (any mode, the current frame) as uint8 RGB [H, W, 3].

    Transparency (alpha modes, palette with transparent entries) over ALPHA_BACKGROUND; L,
    I;16, I, F replicated (16- and 32-bit integers scaled by >> 8, F rounded and clipped);
    CMYK, YCbCr, palette, 1-bit converted. A tRNS colour key on L or RGB is ignored, as
    TensorFlow ignores it.
    """
    mode = image.mode
    if mode in _WIDE_GREY_MODES or mode == "F":
        values = np.asarray(image)
        if mode == "F":
            grey = np.clip(np.round(values.astype(np.float64)), 0, 255).astype(np.uint8)
        else:
            grey = np.clip(values.astype(np.int64) >> 8, 0, 255).astype(np.uint8)  # the high byte, as TensorFlow
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        return composite_over_background(np.asarray(image.convert("RGBA")))
    if mode == "L":
        return np.repeat(np.asarray(image)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb_pillow(source: Union[str, "os.PathLike[str]", bytes]) -> np.ndarray:
    """A file path, or encoded bytes, -> uint8 RGB [H, W, 3] with Pillow (first frame; see pil_to_rgb).

    Any failure is a ValueError that names the file (its cause is Pillow's own error).
    """
    from PIL import Image

    in_memory = isinstance(source, (bytes, bytearray, memoryview))
    name = f"<{len(source)} bytes>" if in_memory else os.fspath(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the pre-scan's MAX_PIXELS is the policy
            with Image.open(io.BytesIO(bytes(source)) if in_memory else name) as image:
                image.seek(0)  # first frame of an animation
                image.load()
                return pil_to_rgb(image)
    except Exception as error:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise ValueError(f"tlkit cannot decode {name}: {type(error).__name__}: {error}") from error
