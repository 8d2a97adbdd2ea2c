"""Evaluation metrics on frame arrays (PSNR, SSIM, identity, hand keypoints, offline lip sync)."""
