package dev.limactl.data;

import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;

/**
 * One training, dev or test example: a conversation (alternating user / assistant turns, starting
 * with the user) plus where it came from.
 *
 * @param id         stable identifier, unique within a data set
 * @param source     e.g. "stackexchange", "wikihow", "writingprompts", "super-ni", "manual"
 * @param split      "train", "dev" or "test"
 * @param turns      the conversation
 * @param provenance free-form key/value facts (exchange, question_id, score, url, license, ...)
 */
public record Example(String id, String source, String split, List<Turn> turns, Map<String, String> provenance) {
    public Example {
        Objects.requireNonNull(id, "id");
        Objects.requireNonNull(source, "source");
        Objects.requireNonNull(split, "split");
        turns = List.copyOf(turns);
        provenance = provenance == null ? Map.of() : Map.copyOf(new TreeMap<>(provenance));
        if (turns.isEmpty()) throw new IllegalArgumentException("example " + id + " has no turns");
        for (int i = 0; i < turns.size(); i++) {
            String want = i % 2 == 0 ? Turn.USER : Turn.ASSISTANT;
            if (!turns.get(i).role().equals(want)) {
                throw new IllegalArgumentException("example " + id + ": turn " + i + " is \"" + turns.get(i).role()
                        + "\" but turns must alternate user, assistant, ... starting with the user");
            }
        }
    }

    /** A single-turn example: prompt then response. */
    public static Example of(String id, String source, String split, String prompt, String response,
                             Map<String, String> provenance) {
        return new Example(id, source, split, List.of(new Turn(Turn.USER, prompt), new Turn(Turn.ASSISTANT, response)),
                provenance);
    }
}
