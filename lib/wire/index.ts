/**
 * The hand-written protobuf wire helpers the hot paths share: the PositionBatch reader, a
 * small writer and varints (each replaces a protobuf-es call on a measured hot path).
 */
export { internedText } from "./interned-text";
export { readPositionBatch, type PositionFields } from "./position-reader";
export { ProtoWriter } from "./proto-writer";
export { varintSize, writeVarint } from "./varint";
