"""The U-Net (seed and cascade configurations), training, checkpoints and inference: tensors and files only."""

__all__ = ["card", "checkpoint", "configs", "data", "demo_model", "infer", "shipped", "train", "unet", "unet_parts"]
