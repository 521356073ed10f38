package dev.limactl.data;

import java.util.Objects;

/** One utterance of a conversation. role is "user" or "assistant" (LIMA's two speakers). */
public record Turn(String role, String text) {
    public static final String USER = "user";
    public static final String ASSISTANT = "assistant";

    public Turn {
        Objects.requireNonNull(role, "role");
        Objects.requireNonNull(text, "text");
        if (!role.equals(USER) && !role.equals(ASSISTANT)) {
            throw new IllegalArgumentException("turn role must be \"user\" or \"assistant\", got \"" + role + "\"");
        }
    }
}
