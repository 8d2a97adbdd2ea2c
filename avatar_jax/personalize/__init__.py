"""Single-image personalization: keypoints -> body fit -> photometric Gaussian fit -> canonical avatar."""
