package dev.limactl.data.curate;

/** A candidate a filter rejected: which source and item, which rule, and the detail a curator needs. */
public record Rejection(String source, String id, String rule, String detail) {}
