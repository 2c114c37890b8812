"""sagan_edu: a small library and a course, from scaled dot-product attention to SAGAN.

Modules, one concept each:

    attention      scaled dot-product attention, multi-head attention, the SAGAN block
    spectral_norm  spectral normalisation by power iteration (float32, or float64)
    models         Generator and Discriminator (DCGAN- and ResNet-style)
    losses         hinge and non-saturating GAN losses
    config         TrainConfig: what defines a training run, checked when it is built
    training       Trainer and train(): the GAN training loop
    checkpoints    writing and reading checkpoints safely; the run folder's lock
    fast_step      the training iteration replayed as one CUDA graph (TrainConfig.fast_step)
    data           datasets: embedded MNIST-5k, torchvision datasets, synthetic long-range data
    metrics        Fréchet distance and KID in MNIST-classifier features, consistency
    halves         shape-only and colour-only agreement of twin-shapes halves
    attention_ablation  switching attention off at inference (γ scaled, uniform weights)
    attention_maps numbers about attention maps: distance, entropy, share on a region
    pretrained     the shipped weights (safetensors)
    viz            image grids, attention overlays, training curves (matplotlib)
    diagrams       data-flow pictures: the SAGAN block, one training iteration, gradient paths
    widgets        the attention explorers (ipywidgets)
    sequence       toy sequence tasks and models for the attention notebooks
    checks         the functions exercise cells call on a learner's code
    course         what the notebooks share: setup cell, fast mode, Colab links
    cli            the `sagan-edu` command
"""

from sagan_edu.attention import MultiHeadAttention, SelfAttention2d, scaled_dot_product_attention

__version__ = "0.1.0"

__all__ = ["MultiHeadAttention", "SelfAttention2d", "__version__", "scaled_dot_product_attention"]
