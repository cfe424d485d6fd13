"""Image decoding, item transforms, batched augmentation, models and the vision learner."""
