"""Checks for the exercises: write a function, then call its check on it.

    from sagan_edu.checks import check_attention_weights
    check_attention_weights(attention_weights)   # one ✅ line, or a message saying what is wrong

Each check runs your code on several random inputs (with batch dimensions, odd sizes and edge cases
such as fully masked rows), compares the results and their gradients with the library's reference,
and prints one line when everything agrees. Otherwise it raises `CheckFailed`, an AssertionError
whose message says in words what looks wrong and, when it recognises a common mistake, which one.
The NotImplementedError of an unfinished stub passes through unchanged.

The checks run on the CPU with their own random seed: they never change your notebook's random
numbers, and they give the same verdict every time.

The exercises (solutions/ and exercises/) and their checks:

    1   attention_weights(q, k)                       check_attention_weights
        scaled_dot_product_attention(q, k, v)         check_scaled_dot_product_attention
    2   masked_attention(q, k, v, mask)               check_masked_attention
    3   split_heads(x, num_heads), merge_heads(x)     check_split_heads, check_merge_heads
    4   a SAGAN block class (channels, pool=2)        check_self_attention_2d
    5   spectral_normalise(weight, u, n_iterations)   check_spectral_normalise
    6   d_hinge_loss(real_logits, fake_logits)        check_d_hinge_loss
        g_hinge_loss(fake_logits)                     check_g_hinge_loss
    7   discriminator_step(G, D, opt_d, real, z)      check_discriminator_step
        generator_step(G, D, opt_g, z)                check_generator_step
    8   update_ema(ema_model, model, decay)           check_update_ema
    9   frechet_distance(features_a, features_b)      check_frechet_distance
    10  query_attention_map(attention, feature_size, query, image_size=None)
                                                      check_query_attention_map
    11  lstm_cell(x, h, c, weight_ih, weight_hh, bias) check_lstm_cell
    12  embedding_gradient_norms(model, tokens, targets)
                                                      check_embedding_gradient_norms
    13  chunked_attention(q, k, v, chunk_size)        check_chunked_attention
    14  d_loss(real_logits, fake_logits)              check_d_nonsaturating_loss
        g_loss(fake_logits)                           check_g_nonsaturating_loss
    15  optimal_discriminator(p_data, p_model)        check_optimal_discriminator
    16  scaled_attention(block, x, scale)             check_scaled_attention
    17  uniform_attention(block, x)                   check_uniform_attention

The checks live in one module per exercise notebook, with what they share in `_common`; everything
is re-exported here, so `from sagan_edu.checks import check_…` is all a notebook needs.
"""

from sagan_edu.checks._common import CheckFailed
from sagan_edu.checks.ablating_attention import check_scaled_attention, check_uniform_attention
from sagan_edu.checks.attention_in_chunks import TensorRecorder, check_chunked_attention
from sagan_edu.checks.attention_weights_and_masks import (
    check_attention_weights,
    check_masked_attention,
    check_scaled_dot_product_attention,
)
from sagan_edu.checks.frechet_distance_and_attention_maps import (
    check_frechet_distance,
    check_query_attention_map,
    reference_frechet_distance,
)
from sagan_edu.checks.heads_and_the_sagan_block import (
    check_merge_heads,
    check_self_attention_2d,
    check_split_heads,
)
from sagan_edu.checks.recurrence_and_long_range import (
    check_embedding_gradient_norms,
    check_lstm_cell,
)
from sagan_edu.checks.spectral_norm_and_hinge_loss import (
    check_d_hinge_loss,
    check_g_hinge_loss,
    check_spectral_normalise,
)
from sagan_edu.checks.the_gan_game import (
    check_d_nonsaturating_loss,
    check_g_nonsaturating_loss,
    check_optimal_discriminator,
)
from sagan_edu.checks.training_steps_and_ema import (
    check_discriminator_step,
    check_generator_step,
    check_update_ema,
)

__all__ = [
    "CheckFailed",
    "TensorRecorder",
    "check_attention_weights",
    "check_chunked_attention",
    "check_d_hinge_loss",
    "check_d_nonsaturating_loss",
    "check_discriminator_step",
    "check_embedding_gradient_norms",
    "check_frechet_distance",
    "check_g_hinge_loss",
    "check_g_nonsaturating_loss",
    "check_generator_step",
    "check_lstm_cell",
    "check_masked_attention",
    "check_merge_heads",
    "check_optimal_discriminator",
    "check_query_attention_map",
    "check_scaled_attention",
    "check_scaled_dot_product_attention",
    "check_self_attention_2d",
    "check_spectral_normalise",
    "check_split_heads",
    "check_uniform_attention",
    "check_update_ema",
    "reference_frechet_distance",
]
