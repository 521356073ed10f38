package dev.limactl.engine;

import dev.limactl.engine.binding.LimaNative;

/** Status-code checking for the wrappers of this package. */
final class Native {
    private Native() {}

    static void check(int status) {
        if (status != 0) {
            throw new LimaException(LimaStatus.of(status), LimaNative.lastError());
        }
    }
}
