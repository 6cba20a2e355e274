"""Torsos of a user's own for tests/test_user_network.py: Keras functions a run records as user_torsos:NAME."""

import keras

WIDTH = 32


def residual_torso(width: int) -> keras.Model:
    """Dense to 32, then two residual blocks (LayerNormalization, Dense relu, added back): 3 Dense layers and 2
    LayerNormalizations, width*32+32 + 2*(32*32+32) + 2*(32+32) weights."""
    inputs = keras.Input((width,))
    features = keras.layers.Dense(WIDTH)(inputs)
    for _ in range(2):
        block = keras.layers.LayerNormalization()(features)
        block = keras.layers.Dense(WIDTH, activation="relu")(block)
        features = keras.layers.Add()([features, block])
    return keras.Model(inputs, features)


def residual_weights(width: int) -> int:
    """How many numbers ``residual_torso(width)`` holds."""
    return width * WIDTH + WIDTH + 2 * (WIDTH * WIDTH + WIDTH) + 2 * (2 * WIDTH)


def narrow_torso(width: int) -> keras.Model:
    """One Dense layer of 8 relu units (a value torso of another width than the policy's)."""
    inputs = keras.Input((width,))
    return keras.Model(inputs, keras.layers.Dense(8, activation="relu")(inputs))


def not_a_model(width: int) -> list:
    return [keras.layers.Dense(8)]


def rank_three_torso(width: int) -> keras.Model:
    inputs = keras.Input((width,))
    return keras.Model(inputs, keras.layers.Reshape((2, 4))(keras.layers.Dense(8)(inputs)))


_ONE = []


def one_model_for_all(width: int) -> keras.Model:
    if not _ONE:
        _ONE.append(residual_torso(width))
    return _ONE[0]


def failing_torso(width: int) -> keras.Model:
    raise ValueError(f"no torso for {width} features")


from os import getpid  # noqa: E402 - a function this module imports, not one it defines
