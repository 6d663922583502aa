/// Memory a backend allocated. Only the backend that made it reads it; everyone else holds it opaquely.
public protocol TensorStorage: AnyObject {}

/// A dense, row-major array living on some backend.
public final class Tensor {
    public let shape: [Int]
    public let dtype: DType
    public let storage: any TensorStorage

    public init(shape: [Int], dtype: DType, storage: any TensorStorage) {
        self.shape = shape
        self.dtype = dtype
        self.storage = storage
    }

    public var elementCount: Int { shape.reduce(1, *) }
    /// Leading dimension (rows of a matrix, tokens of an activation).
    public var rows: Int { shape[0] }
    /// Elements per row: the product of every dimension after the first.
    public var rowWidth: Int { shape.dropFirst().reduce(1, *) }
}
