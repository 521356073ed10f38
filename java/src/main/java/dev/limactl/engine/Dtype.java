package dev.limactl.engine;

/** Storage type of saved weights. */
public enum Dtype {
    F32(0), BF16(1), F16(2);

    final int code;

    Dtype(int code) {
        this.code = code;
    }
}
