package dev.limactl.engine.binding;

import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclUniqueId;

/**
 * Rank 0's NCCL unique id (128 bytes, the token every CUDA rank of a job passes to NCCL to form one
 * communicator) made with the JavaCPP NCCL binding. Its JNI library needs libnccl.so.2 and the CUDA
 * runtime on the loader's path; where they are not, {@link #create()} says why and the caller falls
 * back to the NCCL that liblima's CUDA plugin opens (lima_comm_nccl_unique_id).
 */
public final class NcclIds {
    public static final int BYTES = 128;

    private NcclIds() {}

    /** A new unique id, or null with the reason in {@code why[0]}. */
    public static byte[] create(String[] why) {
        try {
            ncclUniqueId id = new ncclUniqueId();
            try {
                int r = nccl.ncclGetUniqueId(id);
                if (r != nccl.ncclSuccess) {
                    why[0] = "ncclGetUniqueId returned " + r + " (" + nccl.ncclGetErrorString(r).getString() + ")";
                    return null;
                }
                byte[] out = new byte[BYTES];
                id.internal().get(out);
                return out;
            } finally {
                id.close();
            }
        } catch (UnsatisfiedLinkError | NoClassDefFoundError | ExceptionInInitializerError e) {
            why[0] = "the JavaCPP NCCL binding cannot load here: " + e;
            return null;
        }
    }
}
