"""Image decoding, item transforms, batched augmentation, models and the vision learner.

Importing any part of it registers what vision adds to the generic core: the image grid that
`show_batch`, `show_results` and `plot_top_losses` draw with.
"""

from . import show as _show  # noqa: F401  (registers show_images as the data's grid)
